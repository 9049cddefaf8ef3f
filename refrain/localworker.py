"""Run a real Celery worker process next to this one (the demo and the worker tests use it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


@contextmanager
def local_worker(
    *,
    queues: str = "default,cpu,gpu",
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
    logfile: Path | None = None,
    name: str = "local",
    beat: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``celery worker`` as a child process; stop it (warm shutdown, then kill) on exit."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "refrain",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}-{os.getpid()}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        cmd.append("--beat")
    out = logfile.open("ab") if logfile else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd,
        cwd=BASE_DIR,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # Warm shutdown: SIGTERM to the main process only, which stops consuming and waits for
            # its pool to finish the tasks in hand. SIGTERM to the whole group would kill the pool
            # children mid-task, and the task's result would become a WorkerLostError.
            proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            # Then nothing of the worker may outlive it (a pool child, a hung task).
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if logfile:
            out.close()  # type: ignore[union-attr]
