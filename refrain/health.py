"""``/healthz`` and ``/livez``: is this web process, and what it depends on, able to serve?

``/livez`` touches nothing: it answers 200 while the process serves requests (a container's
liveness check, the proxy's upstream check). ``/healthz`` checks, each with a short timeout:

- ``database``: ``SELECT 1`` on the default connection (libpq's ``connect_timeout`` bounds a
  connect, ``DATABASE_CONNECT_TIMEOUT``);
- ``broker``: a connection to ``CELERY_BROKER_URL`` (Redis answers a PING);
- ``storage``: a probe written to and deleted from the media storage (``default_storage``, uploads
  and served copies) and from the artifacts storage (``STORAGES["artifacts"]``: features, models,
  the musicnn weights), a folder or a bucket; a bucket's failure names its S3 error code
  (``AccessDenied``, ``NoSuchBucket``, ...);
- ``workers``: one ``inspect().active_queues()`` broadcast: how many Celery workers answer and how
  many consume each configured queue. Cached for ``REFRAIN_HEALTH_WORKER_CACHE_SECONDS`` so a
  polled or abused endpoint does not flood the workers with broadcasts.

The first three are required: any failure answers 503. Workers are not: the web serves annotators
without them (jobs wait in the queues), so no worker, or a queue nobody consumes, is a ``warn`` and
the answer stays 200 with ``"status": "degraded"``; a load balancer keeps the web in rotation while
monitoring alerts on the body. Each check catches its own failure and reports a short reason (the
exception's class, never a URL, host or credential); details go to the log. Not authenticated.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.db import connections, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger("refrain.health")

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
REQUIRED = ("database", "broker", "storage")
#: Brokers without Celery's remote control (the embedded default): workers cannot be asked.
NO_REMOTE_CONTROL = ("filesystem://", "memory://")

Check = dict[str, Any]


def _timeout() -> float:
    return float(getattr(settings, "REFRAIN_HEALTH_TIMEOUT_SECONDS", 1.0))


def _failed(what: str, exc: BaseException) -> Check:
    logger.warning("healthz: %s check failed", what, exc_info=exc)
    return {"status": FAIL, "detail": f"{what} failed ({type(exc).__name__})"}


def check_database() -> Check:
    try:
        connection = connections["default"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        # A broken connection must not be reused by the next request of this thread.
        with suppress(Exception):
            connections["default"].close_if_unusable_or_obsolete()
        return _failed("query", exc)
    return {"status": OK}


def _broker_connection(timeout: float) -> Any:
    from refrain.celery import app

    url = settings.CELERY_BROKER_URL
    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {})
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    return app.connection_for_write(url, connect_timeout=timeout, transport_options=options)


def check_broker() -> Check:
    try:
        with _broker_connection(_timeout()) as conn:
            conn.ensure_connection(max_retries=0, timeout=_timeout())
    except Exception as exc:
        return _failed("connection", exc)
    return {"status": OK}


def _storage_failed(what: str, exc: BaseException) -> Check:
    logger.warning("healthz: %s check failed", what, exc_info=exc)
    # An S3 error carries a code that says what to fix (AccessDenied, NoSuchBucket); never the URL.
    error = getattr(exc, "response", None)
    code = (error.get("Error") or {}).get("Code") if isinstance(error, dict) else None
    reason = f"S3 {code}" if code else type(exc).__name__
    return {"status": FAIL, "detail": f"{what} failed ({reason})"}


def _probe(storage: Any) -> None:
    name = storage.save(f"healthz-{uuid.uuid4().hex}.probe", ContentFile(b"ok"))
    storage.delete(name)


def check_storage() -> Check:
    try:
        _probe(default_storage)
    except Exception as exc:
        return _storage_failed("media write", exc)
    try:
        _probe(storages["artifacts"])
    except Exception as exc:
        return _storage_failed("artifact write", exc)
    return {"status": OK}


def _ask_workers() -> Check:
    if settings.CELERY_BROKER_URL.startswith(NO_REMOTE_CONTROL):
        return {
            "status": SKIPPED,
            "detail": "the embedded broker has no remote control: workers are not asked",
        }
    from refrain.celery import app

    try:
        with _broker_connection(_timeout()) as conn:
            replies = app.control.inspect(timeout=_timeout(), connection=conn).active_queues() or {}
    except Exception as exc:
        return _failed("worker broadcast", exc)
    queues = {q.name: 0 for q in settings.CELERY_TASK_QUEUES}
    for consumed in replies.values():
        for name in {q.get("name") for q in consumed or []}:
            if name in queues:
                queues[name] += 1
    idle = sorted(name for name, n in queues.items() if n == 0)
    check: Check = {"status": OK, "workers": len(replies), "queues": queues}
    if not replies:
        check.update(status=WARN, detail="no worker answered")
    elif idle:
        check.update(status=WARN, detail=f"no worker consumes {', '.join(idle)}")
    return check


_worker_cache: dict[str, Any] = {}
_worker_lock = threading.Lock()


def check_workers() -> Check:
    """The workers' answer, at most ``REFRAIN_HEALTH_WORKER_CACHE_SECONDS`` old (one broadcast at a
    time per process; concurrent requests wait for it and share it)."""
    max_age = float(getattr(settings, "REFRAIN_HEALTH_WORKER_CACHE_SECONDS", 10.0))
    with _worker_lock:
        cached = _worker_cache.get("check")
        if cached is not None and time.monotonic() - _worker_cache["at"] < max_age:
            return {**cached, "cached": True}
        check = _ask_workers()
        _worker_cache.update(check=check, at=time.monotonic())
        return check


def _timed(run: Callable[[], Check]) -> Check:
    started = time.perf_counter()
    try:
        check = run()
    except Exception as exc:  # a check's own bug still answers, never a 500
        check = _failed("check", exc)
    check["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return check


def health_report() -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 503 when a required check fails, else 200."""
    checks = {
        "database": _timed(check_database),
        "broker": _timed(check_broker),
        "storage": _timed(check_storage),
    }
    if checks["broker"]["status"] == FAIL:
        checks["workers"] = {"status": SKIPPED, "detail": "the broker is down", "latency_ms": 0.0}
    else:
        checks["workers"] = _timed(check_workers)
    if any(checks[name]["status"] == FAIL for name in REQUIRED):
        status, overall = 503, "fail"
    elif any(c["status"] in (WARN, FAIL) for c in checks.values()):
        status, overall = 200, "degraded"
    else:
        status, overall = 200, "ok"
    return status, {"status": overall, "required": list(REQUIRED), "checks": checks}


@never_cache
@require_safe
@transaction.non_atomic_requests  # ATOMIC_REQUESTS would connect before the view could report
def healthz(request: HttpRequest) -> JsonResponse:
    status, body = health_report()
    return JsonResponse(body, status=status)


@never_cache
@require_safe
@transaction.non_atomic_requests
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
