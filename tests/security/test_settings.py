"""Deployment settings: the built-in key is never used silently, and ``check --deploy`` is clean with
the production environment that docs/deployment.md documents."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k8Jq2vX0-3nRz7LwT1pYc5HfA9sDgE4uMbNoVtQiZ6yKxWlC_ruPeOjGhI2aS0dF"

# The production environment of docs/deployment.md (a server database, DEBUG off, a real key).
PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://refrain@db.internal:5432/refrain",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "CACHE_URL": "redis://redis.internal:6379/1",
    "ALLOWED_HOSTS": "refrain.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://refrain.example.org",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "REFRAIN_TRUSTED_PROXIES": "1",
}


def _manage(*args: str, env: dict[str, str], var_dir: Path) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REFRAIN_ENV", "SECRET_KEY", "DEBUG", "DATABASE_URL", "CACHE_URL"}
        and not k.startswith(("SECURE_", "REDIS_", "AWS_", "REFRAIN_ARTIFACT"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "REFRAIN_VAR_DIR": str(var_dir), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path: Path) -> None:
    done = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION_ENV, "SECRET_KEY": STRONG_KEY},
        var_dir=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    # The key came from the environment: nothing was generated.
    assert not (tmp_path / "secret_key").exists()


def test_check_deploy_is_clean_with_artifacts_in_a_bucket(tmp_path: Path) -> None:
    """The several-machine environment of docs/deploy.md: artifacts in an S3-compatible bucket."""
    env = {
        **PRODUCTION_ENV,
        "SECRET_KEY": STRONG_KEY,
        "REFRAIN_ARTIFACT_STORAGE": "s3://refrain-artifacts/prod",
        "AWS_S3_ENDPOINT_URL": "http://minio.internal:9000",
        "REFRAIN_CACHE_DIR": str(tmp_path / "cache"),
    }
    code = (
        "from django.conf import settings; import json; "
        "print(json.dumps(settings.STORAGES['artifacts']))"
    )
    shown = _manage("shell", "-c", code, env=env, var_dir=tmp_path)
    assert shown.returncode == 0, shown.stderr
    artifacts = json.loads(shown.stdout.strip().splitlines()[-1])
    assert artifacts["BACKEND"] == "storages.backends.s3.S3Storage"
    assert artifacts["OPTIONS"]["bucket_name"] == "refrain-artifacts"
    assert artifacts["OPTIONS"]["location"] == "prod"
    assert artifacts["OPTIONS"]["file_overwrite"] is True
    done = _manage("check", "--deploy", "--fail-level", "WARNING", env=env, var_dir=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_an_artifact_storage_that_is_not_a_bucket_url_is_refused(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "SECRET_KEY": STRONG_KEY, "REFRAIN_ARTIFACT_STORAGE": "gs://x/y"}
    done = _manage("check", env=env, var_dir=tmp_path)
    assert done.returncode != 0
    assert "REFRAIN_ARTIFACT_STORAGE must be empty (local) or s3://bucket/prefix" in done.stderr


def test_production_without_a_secret_key_refuses_to_start(tmp_path: Path) -> None:
    done = _manage("check", env=PRODUCTION_ENV, var_dir=tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "SECRET_KEY is not set" in done.stderr
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    "env",
    [
        # Explicit production on the embedded database still needs a key.
        {"REFRAIN_ENV": "production", "DATABASE_URL": "sqlite:///x.sqlite3"},
        # The old built-in literal, with DEBUG off, anywhere.
        {"SECRET_KEY": "refrain-embedded-insecure-key-change-me", "DATABASE_URL": "sqlite:///x"},
    ],
    ids=["explicit-production-no-key", "old-builtin-key"],
)
def test_the_builtin_or_a_missing_key_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    done = _manage("check", env=env, var_dir=tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "SECRET_KEY" in done.stderr


def test_embedded_mode_generates_a_private_key_once_and_keeps_it(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    first = _manage("shell", "-c", code, env=env, var_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _manage("shell", "-c", code, env=env, var_dir=tmp_path)
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert first.stdout.split()[-1] == second.stdout.split()[-1] == key
    assert key != "refrain-embedded-insecure-key-change-me"


def test_check_deploy_warns_when_throttles_are_not_shared(tmp_path: Path) -> None:
    done = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION_ENV, "SECRET_KEY": STRONG_KEY, "CACHE_URL": "locmemcache://"},
        var_dir=tmp_path,
    )
    assert done.returncode != 0
    assert "refrain.W001" in done.stdout + done.stderr
