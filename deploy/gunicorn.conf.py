"""gunicorn settings for Refrain's web process (``gunicorn -c deploy/gunicorn.conf.py
refrain.wsgi:application``; the image's ``web`` command). Every value can be set from the
environment; see docs/deploy.md.

Threaded workers (``gthread``): a page that streams a clip's audio holds a thread, not a whole
process, and the proxy buffers uploads, so a slow client never holds a worker either.
"""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Processes: one per core up to 4 by default (each imports numpy, scipy and torch: about 300 MB).
workers = _int("GUNICORN_WORKERS", min(multiprocessing.cpu_count(), 4))
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
# Below the proxy's proxy_read_timeout (deploy/nginx.conf, 120 s), so gunicorn answers first.
timeout = _int("GUNICORN_TIMEOUT", 90)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# The proxy keeps connections to gunicorn open (upstream keepalive) for this long.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then so a slow leak (decoded audio, torch caches) cannot grow forever.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)
# Heartbeat files on tmpfs where there is one (containers: /dev/shm), not on a slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The proxy is the only client; Django decides HTTPS from SECURE_PROXY_SSL_HEADER, and the client
# address from X-Forwarded-For with REFRAIN_TRUSTED_PROXIES. gunicorn itself trusts forwarded
# headers only from these addresses (its FORWARDED_ALLOW_IPS environment variable also works).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
# Bounded request lines and headers (gunicorn's defaults, stated here on purpose).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
