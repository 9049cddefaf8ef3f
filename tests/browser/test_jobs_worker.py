"""The jobs page while a real worker extracts features (issue 14): the progress bar moves from the
chunks the worker has written to the end, in the same document, with no reload.

The worker is held once, at the start of its third chunk (``REFRAIN_FAULT_PAUSE_AT``), so the page
is seen at a known partial count however fast the machine is; then it is let go."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from active_learning.models import FeatureSet, JobStatus
from active_learning.services.features import feature_set_create
from annotation.models import Membership
from refrain.celery import app
from refrain.localworker import local_worker
from tests.browser.pages import PASSWORD, SHOTS, login
from tests.conftest import _database_url_for_worker, _queue_exists
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory, write_tone

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CLIPS, CHUNK = 24, 4


def test_the_progress_bar_follows_a_real_worker(browser, live_server, settings, tmp_path: Path):
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ARTIFACT_ROOT = str(tmp_path / "var" / "artifacts")
    with app.connection_for_write() as conn:
        for queue in ("default", "cpu", "gpu"):
            if _queue_exists(conn, queue):
                conn.default_channel.queue_purge(queue)
    project = ProjectFactory(name="Worker progress")
    boss = UserFactory(username="boss-w")
    boss.set_password(PASSWORD)
    boss.save()
    MembershipFactory(project=project, user=boss, role=Membership.Role.ADMIN)
    for i in range(CLIPS):
        wav = write_tone(tmp_path / f"audio/{i}.wav", freq=200.0 + 40 * i, seconds=0.4)
        ClipFactory(project=project, storage_key=str(wav), duration_s=0.4)
    faults = tmp_path / "faults"
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        "REFRAIN_IMPORT_ROOTS": ",".join(map(str, settings.REFRAIN_IMPORT_ROOTS)),
        "REFRAIN_FAULT_DIR": str(faults),
        "REFRAIN_FAULT_PAUSE_AT": "features.chunk:2",
        # INFO: the worker's lines for the job are what its log tail on the page shows.
        "LOG_LEVEL": "INFO",
    }
    base = live_server.url
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, "boss-w")

    fs = feature_set_create(project=project, chunk_size=CHUNK)
    page.goto(f"{base}/p/{project.slug}/jobs/")
    page.evaluate("window.__sameDocument = true")
    bar = f'tr[data-id="{fs.pk}"].job-features progress'
    page.wait_for_selector(bar)
    assert page.get_attribute(bar, "value") == "0"

    with local_worker(env=env, logfile=tmp_path / "worker.log", concurrency=1, name="jobs"):
        app.send_task(
            "active_learning.tasks.extract_features_for_project",
            args=[project.pk],
            kwargs={"feature_set_id": fs.pk},
        )
        deadline = time.monotonic() + 240
        while not (faults / "features.chunk:2.reached").exists():
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.1)
        # Held at its third chunk: two chunks are written, and the page shows them.
        page.wait_for_function(
            f"document.querySelector('{bar}').getAttribute('value') === '{2 * CHUNK}'",
            timeout=30000,
        )
        assert page.get_attribute(bar, "max") == str(CLIPS)
        (faults / "features.chunk:2.go").write_text("")
        row = f'tr[data-id="{fs.pk}"].job-features'
        page.wait_for_selector(f'{row}[data-status="done"]', timeout=240000)
        # The job's log tail, as its worker logged it, opened on the page and kept open.
        page.click(f"{row} details.job-log summary")
        log = page.text_content(f"{row} details.job-log pre") or ""
        last = CLIPS // CHUNK - 1
        assert f"features {fs.pk}: chunk {last} done in" in log, log
        page.wait_for_timeout(3500)  # one refresh of the rows
        assert page.evaluate(f"document.querySelector('{row} details.job-log').open") is True
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "console-jobs.png"), full_page=True)
    assert page.evaluate("window.__sameDocument") is True  # the same document: no reload
    fs.refresh_from_db()
    assert fs.status == JobStatus.DONE and fs.n_done == CLIPS
    for chunk in range(CLIPS // CHUNK):  # the whole tail: every chunk's worker line, once
        assert fs.log_tail.count(f"features {fs.pk}: chunk {chunk} done in") == 1, fs.log_tail
    assert FeatureSet.objects.filter(project=project).count() == 1
    assert not errors, errors
