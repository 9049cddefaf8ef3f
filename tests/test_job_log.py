"""A job's log tail (refrain.jobs.heartbeat): what the running thread logs while it holds a job row
lands in the row's ``log_tail``, newest last and capped; other threads' lines do not; two workers
of one job (a feature set's chunks) append without losing each other's lines; the jobs API and page
show it."""

from __future__ import annotations

import logging
import threading

import pytest

from active_learning.models import FeatureSet, JobStatus
from annotation.models import Membership
from refrain.jobs import LOG_TAIL_CHARS, heartbeat, log_tail_append
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

log = logging.getLogger("refrain.tests.joblog")


def _feature_set() -> FeatureSet:
    return FeatureSet.objects.create(
        project=ProjectFactory(), backend="logmel-stats", status=JobStatus.RUNNING, n_clips=4
    )


@pytest.mark.parametrize("interval", [0, 0.05])
def test_the_running_thread_s_lines_land_in_the_row(caplog, settings, interval) -> None:
    caplog.set_level(logging.INFO)
    fs = _feature_set()
    elsewhere = threading.Thread(target=lambda: log.warning("another job's line"))
    with heartbeat(FeatureSet, fs.pk, interval=interval):
        log.info("chunk %d: %d clips", 0, 4)
        elsewhere.start()
        elsewhere.join()
        try:
            raise ValueError("bad header")
        except ValueError:
            log.exception("clip 7 failed")
        log.debug("below the level: never made")
    fs.refresh_from_db()
    lines = fs.log_tail.splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        "INFO refrain.tests.joblog: chunk 0: 4 clips",
        "ERROR refrain.tests.joblog: clip 7 failed (ValueError: bad header)",
    ]
    assert "another job's line" in caplog.text  # logged as usual, just not this job's
    assert not logging.getLogger().handlers or all(
        type(h).__name__ != "_JobLines" for h in logging.getLogger().handlers
    )


def test_the_tail_keeps_the_newest_characters_and_appends_from_two_workers() -> None:
    fs = _feature_set()
    log_tail_append(FeatureSet, fs.pk, "a" * (LOG_TAIL_CHARS - 10) + "\n")
    log_tail_append(FeatureSet, fs.pk, "worker one: chunk 0 done\n")
    log_tail_append(FeatureSet, fs.pk, "worker two: chunk 1 done\n")
    fs.refresh_from_db()
    assert len(fs.log_tail) == LOG_TAIL_CHARS
    assert fs.log_tail.endswith("worker one: chunk 0 done\nworker two: chunk 1 done\n")
    log_tail_append(FeatureSet, fs.pk, "")  # nothing new: no write
    fs.refresh_from_db()
    assert fs.log_tail.endswith("worker two: chunk 1 done\n")


def test_the_jobs_api_and_page_show_the_log(client) -> None:
    fs = _feature_set()
    log_tail_append(
        FeatureSet, fs.pk, "".join(f"12:00:{i:02d} INFO x: line {i}\n" for i in range(20))
    )
    admin = UserFactory(username="log-admin")
    MembershipFactory(project=fs.project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    page = client.get(f"/p/{fs.project.slug}/jobs/rows/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "log (12 newest lines)" in html
    assert "line 19" in html and "line 8" in html and "line 7\n" not in html
    from annotation.services.tokens import api_token_create

    token = api_token_create(user=admin, name="log")[1]
    r = client.get(f"/api/v1/projects/{fs.project.pk}/jobs", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 200
    (row,) = r.json()["feature_sets"]
    assert (
        row["log_tail"].splitlines()[-1].endswith("line 19")
        and len(row["log_tail"].splitlines()) == 20
    )
