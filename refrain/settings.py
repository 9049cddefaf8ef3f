"""Refrain settings, read from the environment (12-factor).

Two configurations share one code path:

* embedded (the default): SQLite under ``var/`` and Celery's filesystem transport, so a bare machine
  runs the whole loop with a local worker and no server;
* production: ``DATABASE_URL=postgres://...`` and ``CELERY_BROKER_URL=redis://...`` (or ``amqp://``),
  with workers on other machines consuming the ``default``, ``cpu`` and ``gpu`` queues.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("REFRAIN_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost", "testserver"]),
)
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env("DEBUG")

# --- Secret key and deployment mode (issue 12) ----------------------------------------------------
# REFRAIN_ENV: "production", "development" or "test"; unset, it is inferred. Production is an explicit
# REFRAIN_ENV=production, or a server database (non-SQLite DATABASE_URL) with DEBUG off. There
# SECRET_KEY must be set: Refrain refuses to start rather than sign sessions and links with a key
# everyone knows. Elsewhere (DEBUG, the SQLite embedded mode, a test run) a random key is generated
# once and kept in VAR_DIR/secret_key (mode 0600), so `make demo` works with nothing set.
_INSECURE_KEYS = {"refrain-embedded-insecure-key-change-me"}
REFRAIN_ENV = env.str("REFRAIN_ENV", default="").strip().lower()
if not REFRAIN_ENV and "pytest" in sys.modules:
    # A test run against PostgreSQL is not a deployment; children (workers, manage.py) inherit it.
    REFRAIN_ENV = os.environ["REFRAIN_ENV"] = "test"
if REFRAIN_ENV not in {"", "production", "development", "test"}:
    raise ImproperlyConfigured(
        f"REFRAIN_ENV={REFRAIN_ENV!r}: use production, development or test (or leave it unset)"
    )
_SQLITE = env.str("DATABASE_URL", default="sqlite://").startswith("sqlite")
IS_PRODUCTION = REFRAIN_ENV == "production" or (not REFRAIN_ENV and not _SQLITE and not DEBUG)


def _embedded_secret_key(var_dir: Path) -> str:
    """The key kept in ``var_dir/secret_key``, created (0600, atomically) on first use."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = var_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)  # atomic; another process may have won the race, keep its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable key; delete it to generate a new one")
    return key


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if IS_PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production (a server DATABASE_URL with DEBUG off, or "
            "REFRAIN_ENV=production) needs its own key: set SECRET_KEY to a long random string, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(50))'`. "
            "See docs/deployment.md."
        )
    SECRET_KEY = _embedded_secret_key(VAR_DIR)
if SECRET_KEY in _INSECURE_KEYS and not DEBUG:
    raise ImproperlyConfigured(
        "SECRET_KEY is the built-in insecure key, which anyone can read in Refrain's source; set "
        "SECRET_KEY to a long random string (see docs/deployment.md)."
    )
# Old keys still accepted when checking signatures, so a key can be rotated without logging
# everybody out (comma-separated).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])

# HTTPS and proxies: production defaults are strict (manage.py check --deploy is clean); each can be
# turned off from the environment, e.g. for a plain-HTTP staging host.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=IS_PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if IS_PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=IS_PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=IS_PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=IS_PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=IS_PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (only if the
# proxy always sets or strips that header), and USE_X_FORWARDED_HOST if it rewrites Host.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER is 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "annotation",
    "quality",
    "active_learning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # JSON errors under /api/, 503 + Retry-After when the database or broker is down (issue 12).
    "refrain.middleware.ErrorResponsesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "refrain.urls"
WSGI_APPLICATION = "refrain.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'refrain.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and a local worker write the same file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (issue 14) ----------------------------------------------------------------------
# WhiteNoise serves them from STATIC_ROOT as `collectstatic` wrote them: content-hashed names
# (cached for a year, immutable), each with a .gz beside it (and .br where the brotli package is
# installed). plotly.js comes from the installed plotly package (refrain.vendor_static), never a CDN.
# `make demo` runs collectstatic; so must a deployment, before it serves (a page whose file is
# missing from the manifest fails loudly rather than load an unhashed file).
# Test runs (REFRAIN_ENV=test, inherited by their gunicorn and workers) and DEBUG keep plain names
# served from the source folders, so no collectstatic step is needed there; STATIC_MANIFEST=0 does
# the same anywhere.
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
STATICFILES_DIRS = [p for p in [BASE_DIR / "static"] if p.is_dir()]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "refrain.vendor_static.VendorFinder",
]
STATIC_MANIFEST = env.bool("STATIC_MANIFEST", default=REFRAIN_ENV != "test")
# --- Media storage (issue 16) ---------------------------------------------------------------------
# "default" holds uploads, the tag-free served copies and the derived visuals (waveform peaks,
# spectrograms). REFRAIN_MEDIA_STORAGE=local (the embedded default) keeps them under MEDIA_ROOT; =s3
# puts them in an S3-compatible bucket (S3, MinIO) so web and workers on several machines share them.
# The same endpoint and credentials reach buckets clips are imported from (import_clips --storage).
REFRAIN_MEDIA_STORAGE = env.str("REFRAIN_MEDIA_STORAGE", default="local").strip().lower()
if REFRAIN_MEDIA_STORAGE not in {"local", "s3"}:
    raise ImproperlyConfigured(
        f"REFRAIN_MEDIA_STORAGE={REFRAIN_MEDIA_STORAGE!r}: use 'local' or 's3'"
    )
# Empty endpoint: AWS itself. Empty keys: boto3's own chain (instance role, ~/.aws), if any.
REFRAIN_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="")
REFRAIN_S3_REGION = env.str("AWS_S3_REGION_NAME", default="us-east-1")
REFRAIN_S3_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
REFRAIN_S3_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
REFRAIN_S3_ADDRESSING_STYLE = env.str("AWS_S3_ADDRESSING_STYLE", default="path")
REFRAIN_MEDIA_BUCKET = env.str("REFRAIN_MEDIA_BUCKET", default="")
REFRAIN_MEDIA_PREFIX = env.str("REFRAIN_MEDIA_PREFIX", default="media").strip("/")
# Browsers get bucket audio by a presigned URL valid this long (after Refrain's permission check).
REFRAIN_PRESIGNED_URL_SECONDS = env.int("REFRAIN_PRESIGNED_URL_SECONDS", default=300)
if REFRAIN_MEDIA_STORAGE == "s3" and not REFRAIN_MEDIA_BUCKET:
    raise ImproperlyConfigured("REFRAIN_MEDIA_STORAGE=s3 needs REFRAIN_MEDIA_BUCKET")


def s3_media_options() -> dict[str, object]:
    """django-storages' S3Storage options for the media bucket, from the settings above."""
    return {
        "bucket_name": REFRAIN_MEDIA_BUCKET,
        "location": REFRAIN_MEDIA_PREFIX,
        "endpoint_url": REFRAIN_S3_ENDPOINT_URL or None,
        "region_name": REFRAIN_S3_REGION or None,
        "access_key": REFRAIN_S3_ACCESS_KEY_ID or None,
        "secret_key": REFRAIN_S3_SECRET_ACCESS_KEY or None,
        "addressing_style": REFRAIN_S3_ADDRESSING_STYLE or None,
        "signature_version": "s3v4",
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": REFRAIN_PRESIGNED_URL_SECONDS,
        "file_overwrite": True,  # keys are content hashes: the same key is the same bytes
    }


# Workers decode bucket audio from a local copy: a bounded least-recently-used cache of downloads.
REFRAIN_AUDIO_CACHE_DIR = Path(
    env.str("REFRAIN_AUDIO_CACHE_DIR", default=str(VAR_DIR / "cache" / "audio"))
)
REFRAIN_AUDIO_CACHE_BYTES = env.int("REFRAIN_AUDIO_CACHE_BYTES", default=2 * 1024**3)

STORAGES = {
    "default": (
        {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": s3_media_options()}
        if REFRAIN_MEDIA_STORAGE == "s3"
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Without the manifest, WhiteNoise also serves straight from the source folders (finders).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG or not STATIC_MANIFEST)
# --- end of static files --------------------------------------------------------------------------
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# --- Artifacts: feature sets, model files, the musicnn weights (active_learning.artifacts) ----------
# STORAGES["artifacts"]: a local folder, ARTIFACT_ROOT (the embedded default), or with
# REFRAIN_ARTIFACT_STORAGE=s3://bucket/prefix an S3-compatible bucket (AWS_S3_ENDPOINT_URL for
# MinIO and the like; credentials from boto3's usual chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
# a profile or an instance role). Readers that need a local file (mmap) copy it into
# REFRAIN_CACHE_DIR, kept least-recently-used within REFRAIN_CACHE_MAX_BYTES; deleting it loses nothing.
ARTIFACT_ROOT = Path(env.str("ARTIFACT_ROOT", default=str(VAR_DIR / "artifacts")))
REFRAIN_ARTIFACT_STORAGE = env.str("REFRAIN_ARTIFACT_STORAGE", default="")
REFRAIN_CACHE_DIR = Path(env.str("REFRAIN_CACHE_DIR", default=str(VAR_DIR / "artifact-cache")))
REFRAIN_CACHE_MAX_BYTES = env.int("REFRAIN_CACHE_MAX_BYTES", default=5 * 1024**3)


def artifact_storage_config(url: str) -> dict:
    """STORAGES["artifacts"] for a REFRAIN_ARTIFACT_STORAGE value ("" or s3://bucket/prefix)."""
    if not url:
        return {"BACKEND": "active_learning.artifacts.LocalArtifactStorage"}
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise ImproperlyConfigured(
            f"REFRAIN_ARTIFACT_STORAGE must be empty (local) or s3://bucket/prefix, not {url!r}"
        )
    options = {
        "bucket_name": bucket,
        "location": prefix.strip("/"),
        "file_overwrite": True,  # one object per key: a re-run task overwrites, never duplicates
        "default_acl": None,
        "querystring_auth": True,
    }
    endpoint = os.environ.get("AWS_S3_ENDPOINT_URL", "")
    if endpoint:
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_S3_REGION_NAME", "") or os.environ.get("AWS_DEFAULT_REGION", "")
    if region:
        options["region_name"] = region
    # Path-style URLs (bucket in the path): what MinIO and most S3-compatible servers expect.
    options["addressing_style"] = os.environ.get("AWS_S3_ADDRESSING_STYLE", "") or "path"
    options["signature_version"] = "s3v4"
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES["artifacts"] = artifact_storage_config(REFRAIN_ARTIFACT_STORAGE)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Celery ---------------------------------------------------------------------------------------
# Embedded default: the filesystem transport needs no server; a local worker and the web process
# exchange messages through var/broker. Production sets redis:// or amqp://.
CELERY_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        # kombu defaults this to ./control in the working directory.
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=55 * 60)
# --- Worker loss (issue 12) ---------------------------------------------------------------------
# Redis (and SQS) hand an unacknowledged message to another worker only after its visibility
# timeout. acks_late tasks stay unacknowledged while they run, so the timeout must exceed the
# longest task (the hard time limit) or a long training would be delivered twice while it still
# runs. A worker that dies is noticed sooner by the orphan sweep below, not by this timeout.
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 30 * 60
)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sqs://", "redis+socket://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
# A running job row (cycle, detection run, feature set, training) records its worker and a
# heartbeat refreshed every REFRAIN_JOB_HEARTBEAT_SECONDS by a thread of the process doing the work.
# The sweep (quality.tasks.sweep_orphans, every minute on beat; `manage.py sweep_orphans` once)
# resumes a row whose heartbeat is older than REFRAIN_JOB_STALE_SECONDS and whose worker is gone
# (asked with Celery's remote control), or one left queued / between steps for
# REFRAIN_JOB_QUEUED_STALE_SECONDS with nobody taking it (its message was lost). A job lost
# REFRAIN_JOB_MAX_ATTEMPTS times is failed with the reason instead of being resumed again.
REFRAIN_JOB_HEARTBEAT_SECONDS = env.float("REFRAIN_JOB_HEARTBEAT_SECONDS", default=30.0)
REFRAIN_JOB_STALE_SECONDS = env.int("REFRAIN_JOB_STALE_SECONDS", default=120)
REFRAIN_JOB_QUEUED_STALE_SECONDS = env.int("REFRAIN_JOB_QUEUED_STALE_SECONDS", default=30 * 60)
REFRAIN_JOB_MAX_ATTEMPTS = env.int("REFRAIN_JOB_MAX_ATTEMPTS", default=3)
# The console's dashboards read snapshots a worker computes (quality.dashboards.snapshots): after
# each relabel cycle, and when a page finds its snapshot older than this.
REFRAIN_DASHBOARD_MAX_AGE_SECONDS = env.int("REFRAIN_DASHBOARD_MAX_AGE_SECONDS", default=10 * 60)
# A new annotation's consensus update is a message; when the broker is down at commit it is only
# logged. The sweep recomputes, inline, the consensus of clips whose newest opinion (of the last
# LOOKBACK hours) is older than STALE seconds and newer than their consensus, BATCH clips a sweep.
REFRAIN_CONSENSUS_STALE_SECONDS = env.int("REFRAIN_CONSENSUS_STALE_SECONDS", default=10 * 60)
REFRAIN_CONSENSUS_SWEEP_LOOKBACK_HOURS = env.int(
    "REFRAIN_CONSENSUS_SWEEP_LOOKBACK_HOURS", default=48
)
REFRAIN_CONSENSUS_SWEEP_BATCH = env.int("REFRAIN_CONSENSUS_SWEEP_BATCH", default=200)
# Fault tests only: a worker started with REFRAIN_FAULT_PAUSE_AT="training.fit,..." stops at those
# points (refrain.jobs.fault_point), touching a file in REFRAIN_FAULT_DIR, so a test can SIGKILL it
# mid-step without guessing with sleeps. Empty (the default) makes every point a no-op.
REFRAIN_FAULT_PAUSE_AT = env.list("REFRAIN_FAULT_PAUSE_AT", default=[])
REFRAIN_FAULT_DIR = env.str("REFRAIN_FAULT_DIR", default="")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Static entries; django-celery-beat copies them into its tables, where admins can edit or add more.
CELERY_BEAT_SCHEDULE = {
    "expire-task-leases": {"task": "annotation.tasks.expire_leases", "schedule": 60.0},
    "fail-stale-taxonomy-imports": {
        "task": "annotation.tasks.fail_stale_taxonomy_imports",
        "schedule": 300.0,
    },
    # Resume jobs whose worker died (see "Worker loss" above).
    "sweep-orphaned-jobs": {"task": "quality.tasks.sweep_orphans", "schedule": 60.0},
    # Pull every Label Studio link: what a missed webhook left behind (docs/labelstudio.md).
    "labelstudio-reconcile": {
        "task": "annotation.integrations.labelstudio.tasks.ls_reconcile_links",
        "schedule": float(env.int("REFRAIN_LS_RECONCILE_SECONDS", default=15 * 60)),
    },
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"), Queue("cpu"), Queue("gpu"))
CELERY_TASK_ROUTES = {
    # Feature extraction and detection are CPU-bound; training wants a GPU worker when one exists.
    "active_learning.tasks.extract_*": {"queue": "cpu"},
    "active_learning.tasks.train_*": {"queue": "gpu"},
    "quality.tasks.detect_*": {"queue": "cpu"},
    # Taxonomies above REFRAIN_TAXONOMY_INLINE_MAX_NODES are written on a worker (issue 12).
    "annotation.tasks.import_taxonomy": {"queue": "cpu"},
    # Clip imports list, download, hash and probe; visuals decode audio (issue 16).
    "annotation.tasks.import_clips": {"queue": "cpu"},
    "annotation.tasks.make_clip_visuals": {"queue": "cpu"},
}
# The relabel cycle runs as a chain of one task per step, each sent to its queue (others: default):
# the retrain (features if missing, K-fold training) to a GPU worker, detection to a CPU worker.
REFRAIN_CYCLE_STEP_QUEUES = {"retrain": "gpu", "detect": "cpu"}

# --- API tokens (issue 12) ------------------------------------------------------------------------
# Lifetime of a new personal API token when its creator does not choose one (0: no expiry), and the
# longest lifetime anyone may choose (0: no limit).
REFRAIN_TOKEN_DEFAULT_DAYS = env.int("REFRAIN_TOKEN_DEFAULT_DAYS", default=90)
REFRAIN_TOKEN_MAX_DAYS = env.int("REFRAIN_TOKEN_MAX_DAYS", default=365)

# --- Throttling and the shared cache (issue 12) ---------------------------------------------------
# Throttle counters must be shared by every web process: CACHE_URL (or REDIS_CACHE_URL) =
# redis://host:6379/1 uses Django's Redis cache (production); unset, a file cache under VAR_DIR/cache
# serves all processes of one host (embedded default); a test run uses local memory.
_cache_url = env.str("CACHE_URL", default="") or env.str("REDIS_CACHE_URL", default="")
if _cache_url.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_url,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="refrain"),
        }
    }
elif _cache_url:
    CACHES = {"default": env.cache_url_config(_cache_url)}
elif REFRAIN_ENV == "test":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
AUTHENTICATION_BACKENDS = ["annotation.auth.ThrottledModelBackend"]
# Clients reach Refrain through this many reverse proxies that append to X-Forwarded-For; 0 (the
# default) uses REMOTE_ADDR. Set it to exactly the number of proxies you run, or clients can forge
# their address.
REFRAIN_TRUSTED_PROXIES = env.int("REFRAIN_TRUSTED_PROXIES", default=0)
# Failed sign-ins per username and per client address within the window; reaching either locks that
# username or address for one window, right password included. 0 turns a limit off.
REFRAIN_LOGIN_MAX_FAILURES_PER_USERNAME = env.int(
    "REFRAIN_LOGIN_MAX_FAILURES_PER_USERNAME", default=10
)
REFRAIN_LOGIN_MAX_FAILURES_PER_ADDRESS = env.int(
    "REFRAIN_LOGIN_MAX_FAILURES_PER_ADDRESS", default=30
)
REFRAIN_LOGIN_WINDOW_SECONDS = env.int("REFRAIN_LOGIN_WINDOW_SECONDS", default=15 * 60)
# Failed bearer-token authentications per client address (then 429 until the window ends).
REFRAIN_TOKEN_AUTH_MAX_FAILURES = env.int("REFRAIN_TOKEN_AUTH_MAX_FAILURES", default=30)
REFRAIN_TOKEN_AUTH_WINDOW_SECONDS = env.int("REFRAIN_TOKEN_AUTH_WINDOW_SECONDS", default=15 * 60)
# Tokens one user may create per window.
REFRAIN_TOKEN_CREATE_MAX = env.int("REFRAIN_TOKEN_CREATE_MAX", default=20)
REFRAIN_TOKEN_CREATE_WINDOW_SECONDS = env.int(
    "REFRAIN_TOKEN_CREATE_WINDOW_SECONDS", default=60 * 60
)

# --- Taxonomy size (issue 12) ---------------------------------------------------------------------
# A taxonomy file with more nodes is refused with the reason. Above the inline limit the import runs
# on a worker (cpu queue) as a TaxonomyImportJob with progress, not inside the web request.
REFRAIN_MAX_TAXONOMY_NODES = env.int("REFRAIN_MAX_TAXONOMY_NODES", default=50_000)
REFRAIN_TAXONOMY_INLINE_MAX_NODES = env.int("REFRAIN_TAXONOMY_INLINE_MAX_NODES", default=5_000)

# --- Clip sources and audio limits (issue 12) -----------------------------------------------------
# Clips are read only from these folders (comma-separated in the env) and MEDIA_ROOT, which is always
# allowed (uploads and the tag-free served copies live there). Every imported path, folder and
# manifest is resolved (symlinks followed) and must lie inside one of them; anything else is rejected
# at import with the reason and never stored as a clip. Nothing is served or decoded from outside
# them either; ``manage.py check_clip_sources`` reports older rows that point elsewhere. The default
# covers ``var/imports`` (put folders to import there) and ``var/demo`` (``make demo`` writes there).
REFRAIN_IMPORT_ROOTS = env.list(
    "REFRAIN_IMPORT_ROOTS", default=[str(VAR_DIR / "imports"), str(VAR_DIR / "demo")]
)
# Behind nginx: the internal location (e.g. "/_media/") that serves MEDIA_ROOT, so audio under it is
# sent by the proxy via X-Accel-Redirect (ranges included) after Refrain's permission check; empty:
# Refrain streams it itself. deploy/nginx.conf defines the location; both must agree.
REFRAIN_AUDIO_ACCEL_PREFIX = env.str("REFRAIN_AUDIO_ACCEL_PREFIX", default="")
# How browsers and Label Studio reach this Refrain (scheme://host[:port], no trailing path): the base
# of absolute links handed to other systems (Label Studio audio URLs and its webhook) where a link
# does not name its own. Empty: such links stay relative, and Label Studio needs --refrain-url.
REFRAIN_PUBLIC_URL = env.str("REFRAIN_PUBLIC_URL", default="").rstrip("/")
# Label Studio audio links are signed with a timestamp and expire after this many seconds (7 days);
# a forged or expired link gets 404. Re-push tasks to Label Studio to refresh older links.
REFRAIN_SIGNED_LINK_MAX_AGE = env.int("REFRAIN_SIGNED_LINK_MAX_AGE", default=7 * 24 * 3600)
# Audio longer than this many seconds is rejected at import, with the reason (10 minutes).
REFRAIN_MAX_CLIP_SECONDS = env.float("REFRAIN_MAX_CLIP_SECONDS", default=10 * 60.0)
# A project with ``long_audio = segment`` cuts longer files into ``segment_seconds`` clips instead,
# up to this many segments per file (a longer file is rejected with the reason).
REFRAIN_MAX_SEGMENTS_PER_FILE = env.int("REFRAIN_MAX_SEGMENTS_PER_FILE", default=480)
# Audio shorter than this is rejected at import (a WAV whose header claims 0xFFFFFFFF data bytes
# over a few bytes of audio reads as a 0.023 s clip).
REFRAIN_MIN_CLIP_SECONDS = env.float("REFRAIN_MIN_CLIP_SECONDS", default=0.25)
# Largest upload (API ``POST /projects/{id}/clips`` and the clips page), in bytes (200 MB); larger
# files are refused before anything is stored.
REFRAIN_MAX_UPLOAD_BYTES = env.int("REFRAIN_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
# ... and never spooled to disk beyond that size (annotation/uploads.py).
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "annotation.uploads.BoundedTemporaryFileUploadHandler",
]
# Feature extraction reads the frame count from the header first and fails a clip that holds more
# frames than this (10 minutes at 48 kHz), so decoding one file never allocates more than
# 4 bytes x this (mono float32, 115 MB) however long its header says it is. The logmel-stats
# embedding then grows by about 1.5 MB per second of audio: a feature worker process peaks near
# 1.2 GB on the longest clip the defaults accept (10 min, 48 kHz stereo; test_hostile_audio.py asserts
# < 1.5 GB, and about 0.5 GB for a one-minute clip); lower both limits together for smaller workers.
REFRAIN_MAX_DECODED_FRAMES = env.int("REFRAIN_MAX_DECODED_FRAMES", default=10 * 60 * 48_000)
# An import stops after this many failed files and says so in its summary.
REFRAIN_IMPORT_MAX_FAILURES = env.int("REFRAIN_IMPORT_MAX_FAILURES", default=1000)
# Failed files are stored as failed clips (with the reason) up to this many per import; beyond, they
# are only listed in the import's problems, so a garbage manifest cannot write 100k rows.
REFRAIN_IMPORT_MAX_FAILED_CLIPS = env.int("REFRAIN_IMPORT_MAX_FAILED_CLIPS", default=100)

# --- Deployment kit: health checks (issue 16) -----------------------------------------------------
# /livez touches nothing; /healthz checks the database, the broker and storage (503 if one fails)
# and asks the workers (a warning only): refrain/health.py, docs/deploy.md. A probe over plain HTTP
# straight to gunicorn (a container or load-balancer check) is answered, not redirected to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$"]
# Seconds each check may wait for the broker or the workers' answer.
REFRAIN_HEALTH_TIMEOUT_SECONDS = env.float("REFRAIN_HEALTH_TIMEOUT_SECONDS", default=1.0)
# The workers' answer is reused this long, so a polled endpoint sends one broadcast per interval.
REFRAIN_HEALTH_WORKER_CACHE_SECONDS = env.float("REFRAIN_HEALTH_WORKER_CACHE_SECONDS", default=10.0)
# libpq waits this long for a PostgreSQL connection (default: the OS's, minutes), so a database
# host that is gone fails a request, and /healthz, in seconds instead of hanging a gunicorn worker.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The filesystem transport has no host; kombu warns about it on every connection.
        "kombu.connection": {"level": "ERROR"},
    },
}
