"""Shared fixtures. No autouse mocks: tests patch only the boundaries they name."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from refrain.localworker import local_worker


def _database_url_for_worker() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    user = s.get("USER") or "postgres"
    pw = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{pw}@{host}:{port}/{s['NAME']}"


@pytest.fixture
def celery_worker_process(transactional_db: None, tmp_path: Path) -> Iterator[Path]:
    """A real ``celery worker`` child process on the configured broker and the *test* database.

    Needs ``transactional_db`` so the worker sees committed rows. Yields the worker's log file.
    """
    from refrain.celery import app

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    # Drop anything a previous (killed) run left in the test queues.
    with app.connection_for_write() as conn:
        for queue in ("default", "cpu", "gpu"):
            if _queue_exists(conn, queue):
                conn.default_channel.queue_purge(queue)
    log = tmp_path / "worker.log"
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        # Rows hold storage keys: the worker's artifacts storage is this process's.
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "REFRAIN_IMPORT_ROOTS": ",".join(map(str, settings.REFRAIN_IMPORT_ROOTS)),
        "LOG_LEVEL": "WARNING",
    }
    with local_worker(env=env, logfile=log, concurrency=1, name="test") as proc:
        deadline = time.monotonic() + 180
        res = app.send_task("refrain.ping", args=["ready"])
        while not res.ready():
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker did not answer within 180 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield log


def _queue_exists(conn: object, queue: str) -> bool:
    try:
        conn.default_channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]
        return True
    except Exception:
        return False


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # Tests write their audio under tmp_path: the session's base temp folder is an import root, as
    # var/imports is in a deployment. Security tests narrow the roots with the ``settings`` fixture.
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    settings.REFRAIN_IMPORT_ROOTS = [*settings.REFRAIN_IMPORT_ROOTS, str(base)]
    # Artifacts (keyed by row ids, which restart with each test database) go to the session's temp
    # folder, never into the checkout's var/artifacts; tests that need their own point it elsewhere.
    settings.ARTIFACT_ROOT = base / "artifacts"
    settings.REFRAIN_CACHE_DIR = base / "artifact-cache"


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = os.environ.get("DATABASE_URL", "sqlite (embedded default)")
    broker = os.environ.get("CELERY_BROKER_URL", "filesystem:// (embedded default)")
    return [f"refrain: DATABASE_URL={db.split('@')[-1]} broker={broker}"]


# --- annotator workflow (queue, API, pages) -------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_throttle_cache() -> Iterator[None]:
    """Each test starts with empty throttle counters (sign-in, bearer-token failures), so failures
    that one test provokes on purpose cannot lock 127.0.0.1 out of the next. Only the test run's
    local-memory cache is cleared, never a shared Redis."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()
    yield


@pytest.fixture
def fast_passwords(settings: object) -> None:
    # Test accounts need no key stretching; PBKDF2 costs ~1 s per user on a loaded 2-core box.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]


@pytest.fixture
def team(db: None, fast_passwords: None) -> dict[str, object]:
    """A project with one member per role, two extra annotators and an outsider."""
    from annotation.models import Membership
    from tests.factories import MembershipFactory, ProjectFactory, UserFactory

    project = ProjectFactory(overlap=1)
    people: dict[str, object] = {"project": project}
    for name, role in [
        ("admin", Membership.Role.ADMIN),
        ("reviewer", Membership.Role.REVIEWER),
        ("ann", Membership.Role.ANNOTATOR),
        ("ann2", Membership.Role.ANNOTATOR),
        ("ann3", Membership.Role.ANNOTATOR),
    ]:
        people[name] = MembershipFactory(
            project=project, user=UserFactory(username=name), role=role
        ).user
    people["outsider"] = UserFactory(username="outsider")
    return people
