"""Who holds a running job row, and proof that it is alive: worker identity, heartbeats, and the
fault points the worker-loss tests stop at.

A job row (relabel cycle, detection run, feature set, model version, import) records the worker
running it (``worker``: the Celery node name, or ``process:<host>`` outside Celery, and
``worker_pid``) and a ``heartbeat_at`` that a daemon thread of that process refreshes every
``REFRAIN_JOB_HEARTBEAT_SECONDS`` while the work runs. The same thread appends what the worker
logged for the job (the lines of the running thread, at the worker's log level) to the row's
``log_tail``, which keeps the last ``LOG_TAIL_CHARS``: the jobs page and API show it. The thread dies with its process, so a
SIGKILLed worker leaves a heartbeat that only ages: the orphan sweep (``quality.services.sweep``)
notices it and resumes the job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, models
from django.db.models import F, Value
from django.db.models.functions import Concat, Right
from django.utils import timezone

logger = logging.getLogger(__name__)

#: Prefix of ``worker`` for work done outside Celery (``manage.py run_cycle``, a shell).
PROCESS_PREFIX = "process:"


class HeldJob(models.Model):
    """Fields of a job row that a worker holds while it runs (abstract)."""

    worker = models.CharField(
        max_length=255,
        blank=True,
        help_text="Celery node name (or process:<host>) of the worker that runs or last ran it.",
    )
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Refreshed by the worker while it runs the job."
    )
    # [{"at": iso time, "action": "resumed" | "resent" | "failed", "reason": "..."}], oldest first.
    sweep_notes = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(
        blank=True, help_text="The last lines its workers logged while running it (newest last)."
    )

    class Meta:
        abstract = True


def worker_identity() -> tuple[str, int]:
    """(node name, pid) of the process running this code: the Celery worker's node name inside a
    task, ``process:<host>`` elsewhere."""
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    hostname = getattr(request, "hostname", None)
    if hostname and not getattr(request, "is_eager", False):
        return str(hostname), os.getpid()
    return f"{PROCESS_PREFIX}{socket.gethostname()}", os.getpid()


def holder_fields(*, now: datetime | None = None) -> dict[str, Any]:
    """The UPDATE that records this process as a row's holder, with a fresh heartbeat."""
    name, pid = worker_identity()
    return {"worker": name, "worker_pid": pid, "heartbeat_at": now or timezone.now()}


def sweep_note(action: str, reason: str, *, now: datetime | None = None) -> dict[str, str]:
    return {"at": (now or timezone.now()).isoformat(), "action": action, "reason": reason}


#: How much of a job's log its row keeps (the newest characters).
LOG_TAIL_CHARS = 6000
#: One logged line at most this long in the tail.
LOG_LINE_CHARS = 400


class _JobLines(logging.Handler):
    """Collects the records one thread logs (any logger, at the levels the process logs), as
    lines, until :meth:`take` hands them over."""

    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the job
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp} {record.levelname} {record.name}: {message}".replace("\n", " ")
        with self._lock:
            self._lines.append(line[:LOG_LINE_CHARS])

    def take(self) -> str:
        with self._lock:
            lines, self._lines = self._lines, []
        return "".join(f"{line}\n" for line in lines)


def log_tail_append(model: type[models.Model], pk: int, text: str) -> None:
    """Append ``text`` to the row's ``log_tail`` in one UPDATE, keeping the newest characters
    (several workers of one job, a feature set's chunks, append without losing each other's)."""
    if not text:
        return
    model._default_manager.filter(pk=pk).update(
        log_tail=Right(Concat(F("log_tail"), Value(text)), LOG_TAIL_CHARS)
    )


@contextmanager
def heartbeat(
    model: type[models.Model], pk: int, *, interval: float | None = None
) -> Iterator[None]:
    """Refresh ``heartbeat_at`` of the row every ``interval`` seconds while the block runs.

    Only while this process still holds the row (same worker and pid): a worker that lost the row
    to a resume never keeps it looking alive. The thread uses its own database connection and
    closes it when the block ends.
    """
    interval = settings.REFRAIN_JOB_HEARTBEAT_SECONDS if interval is None else interval
    lines = _JobLines(threading.get_ident())
    root = logging.getLogger()
    root.addHandler(lines)

    def flush() -> None:
        try:
            log_tail_append(model, pk, lines.take())
        except DatabaseError:  # the log is a courtesy: never fail or stall the job for it
            logger.warning("log of %s %s not saved", model.__name__, pk, exc_info=True)

    if interval <= 0:
        try:
            yield
        finally:
            root.removeHandler(lines)
            flush()
        return
    name, pid = worker_identity()
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    model._default_manager.filter(pk=pk, worker=name, worker_pid=pid).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError:  # a database blip: the next beat tries again
                    logger.warning("heartbeat of %s %s failed", model.__name__, pk, exc_info=True)
                flush()
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 10)
        root.removeHandler(lines)
        flush()


def fault_point(name: str) -> None:
    """Test hook: stop here when ``name`` is in ``REFRAIN_FAULT_PAUSE_AT`` (empty in production).

    Writes ``<REFRAIN_FAULT_DIR>/<name>.reached`` (holding this pid) and waits until
    ``<name>.go`` exists or ten minutes pass, so a fault test can SIGKILL the worker exactly here.
    Once only: when ``<name>.reached`` exists already (the work was redelivered after the kill),
    it passes.
    """
    points = settings.REFRAIN_FAULT_PAUSE_AT
    if not points or name not in points:
        return
    folder = Path(settings.REFRAIN_FAULT_DIR or ".")
    folder.mkdir(parents=True, exist_ok=True)
    reached = folder / f"{name}.reached"
    if reached.exists():
        return
    reached.write_text(f"{os.getpid()}\n")
    logger.warning("fault point %s reached (pid %s): waiting", name, os.getpid())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (folder / f"{name}.go").exists():
        time.sleep(0.05)


#: Seconds a web request may spend reaching the broker when the caller (Label Studio: 1 s for a
#: webhook, 1 s for an ML backend's health check) gives up soon after.
PUBLISH_FAST_TIMEOUT_S = 0.5


def publish_fast(
    task: Any, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
) -> None:
    """Send ``task`` with one connection attempt and no publish retries.

    With the broker down this raises ``kombu.exceptions.OperationalError`` in well under a second
    (Celery's defaults retry for about 6 s), so an endpoint that only enqueues can answer 503 while
    its caller still waits. Routes apply as for ``apply_async``.
    """
    app = task.app
    with app.pool.acquire(block=True, timeout=PUBLISH_FAST_TIMEOUT_S) as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=PUBLISH_FAST_TIMEOUT_S
        )
        task.apply_async(args, kwargs=kwargs or {}, connection=conn, retry=False)


def delay_on_commit_or_log(task: Any, *args: Any, **kwargs: Any) -> None:
    """``task.delay(*args, **kwargs)`` once the current transaction commits; a broker that cannot
    take it is logged, never raised. For work that someone or something redoes anyway (a page
    that asks again, the sweep, the next refresh): a broker outage must not fail the request or
    the job that sent it after its own writes are stored."""
    from django.db import transaction
    from kombu.exceptions import OperationalError

    def send() -> None:
        try:
            task.delay(*args, **kwargs)
        except OperationalError as exc:
            logger.warning("%s not queued (broker unavailable): %s", task.name, exc)

    transaction.on_commit(send)
