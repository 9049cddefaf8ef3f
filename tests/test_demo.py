"""The quick start's ``manage.py demo`` on the embedded default (SQLite, the filesystem broker, a
local worker), as ``make demo SERVE=0`` runs it, on a small project: the whole loop in one command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.worker

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_loop_end_to_end_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_RESULT_BACKEND": "django-db",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    manage("migrate", "-v0")
    out = manage("demo", "--clips", "80", "--timeout", "300")
    print(out)
    assert "80 imported, 0 duplicate, 3 failed" in out
    assert re.search(r"logmel-stats \(415-d\): 80 done, 0 failed, 0 left \[done\]", out)
    assert "retrain -> detect -> route -> acquire [done]" in out
    answered = re.search(r"second opinions in [\d.]+ s: (\d+) relabel tasks answered", out)
    assert answered and int(answered.group(1)) > 0
    assert re.search(r"issues \{'(confirmed|rejected)'", out)  # the worker closed them
    assert "hierarchical F1" in out and "broken_truncated.ogg: truncated" in out
