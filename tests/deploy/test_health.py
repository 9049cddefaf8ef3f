"""``/healthz`` and ``/livez`` (refrain/health.py) against the real PostgreSQL and Redis, and with each
required service pointed at a dead port (the shared services are never stopped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from refrain import health
from tests.security.stack import free_port

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=False)
def fresh(settings: Any) -> Any:
    """No cached worker answer from another test."""
    settings.REFRAIN_HEALTH_WORKER_CACHE_SECONDS = 0.0
    health._worker_cache.clear()
    return settings


def _get(path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    response = Client(raise_request_exception=False).get(path)
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_livez_answers_without_touching_anything(client: Client) -> None:
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_with_real_services_and_no_worker_is_200_degraded(fresh: Any, tmp_path) -> None:
    if django_settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    fresh.MEDIA_ROOT = tmp_path / "media"
    fresh.ARTIFACT_ROOT = tmp_path / "artifacts"
    status, body = _get()
    assert status == 200, body
    checks = body["checks"]
    assert {name: checks[name]["status"] for name in ("database", "broker", "storage")} == {
        "database": "ok",
        "broker": "ok",
        "storage": "ok",
    }
    assert all(isinstance(c["latency_ms"], float) for c in checks.values())
    # No worker runs in this test: a warning, not a failure.
    assert checks["workers"]["status"] == "warn"
    assert checks["workers"]["workers"] == 0
    assert checks["workers"]["queues"] == {"default": 0, "cpu": 0, "gpu": 0}
    assert body["status"] == "degraded"
    assert body["required"] == ["database", "broker", "storage"]
    # The probes are gone.
    assert list((tmp_path / "media").iterdir()) == []
    assert list((tmp_path / "artifacts").iterdir()) == []


def test_healthz_with_the_broker_down_is_503_with_a_short_reason(fresh: Any) -> None:
    dead = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    fresh.CELERY_BROKER_URL = dead
    status, body = _get()
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "fail"
    assert body["checks"]["broker"]["detail"] == "connection failed (OperationalError)"
    assert body["checks"]["broker"]["latency_ms"] < 3000
    assert body["checks"]["workers"]["status"] == "skipped"
    text = json.dumps(body)
    assert "s3cret" not in text and "127.0.0.1" not in text


def test_healthz_with_unwritable_storage_is_503(fresh: Any, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fresh.ARTIFACT_ROOT = blocker / "artifacts"
    status, body = _get()
    assert status == 503
    assert body["checks"]["storage"] == {
        "status": "fail",
        "detail": "artifact write failed (NotADirectoryError)",
        "latency_ms": body["checks"]["storage"]["latency_ms"],
    }
    assert str(tmp_path) not in json.dumps(body)


def test_the_worker_answer_is_cached_between_polls(settings: Any, monkeypatch) -> None:
    settings.REFRAIN_HEALTH_WORKER_CACHE_SECONDS = 60.0
    health._worker_cache.clear()
    asked: list[int] = []

    def ask() -> dict[str, Any]:
        asked.append(1)
        return {"status": "ok", "workers": 1, "queues": {"default": 1, "cpu": 1, "gpu": 1}}

    monkeypatch.setattr(health, "_ask_workers", ask)
    first, second = health.check_workers(), health.check_workers()
    assert len(asked) == 1
    assert "cached" not in first and second["cached"] is True
    health._worker_cache.clear()


def test_a_check_that_raises_still_answers(fresh: Any, monkeypatch) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(health, "check_storage", broken)
    status, body = _get()
    assert status == 503
    assert body["checks"]["storage"]["detail"] == "check failed (RuntimeError)"
    assert "secret detail" not in json.dumps(body)


def test_healthz_refuses_writes(client: Client) -> None:
    assert client.post("/healthz").status_code == 405


@pytest.mark.worker
def test_healthz_counts_a_real_worker_per_queue(fresh: Any, celery_worker_process: Path) -> None:
    status, body = _get()
    assert status == 200, body
    workers = body["checks"]["workers"]
    assert workers["status"] == "ok", workers
    assert workers["workers"] >= 1
    assert all(n >= 1 for n in workers["queues"].values())
    assert body["status"] == "ok"


def test_healthz_with_the_database_down_is_503_not_500(tmp_path: Path) -> None:
    """A process whose DATABASE_URL points at a dead port (the app cannot even open a transaction):
    the view runs outside ATOMIC_REQUESTS and reports the failure itself."""
    port = free_port()
    code = (
        "from django.test import Client\n"
        "import json\n"
        "r = Client(raise_request_exception=False).get('/healthz')\n"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://refrain:db-pa55@127.0.0.1:{port}/refrain",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "REFRAIN_HEALTH_TIMEOUT_SECONDS": "1",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    database = answer["body"]["checks"]["database"]
    assert database["status"] == "fail"
    assert database["detail"] == "query failed (OperationalError)"
    assert answer["body"]["checks"]["storage"]["status"] == "ok"
    assert "db-pa55" not in done.stdout and str(port) not in json.dumps(answer["body"])


def test_only_the_url_configuration_imports_the_health_module() -> None:
    """refrain.health sits above the apps (it asks the Celery app and the storage); the apps never
    import it (docs/architecture.md's layers)."""
    import grimp

    graph = grimp.build_graph(
        "refrain", "annotation", "active_learning", "quality", "taxonomy", cache_dir=None
    )
    assert graph.find_modules_that_directly_import("refrain.health") == {"refrain.urls"}
