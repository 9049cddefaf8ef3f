"""The live jobs page: its tables as a partial the page fetches every few seconds, progress bars,
and an admin's retry and cancel (JSON answers, CSRF, refusals, what the workers do afterwards)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.services.features import feature_set_finalize
from active_learning.tasks import extract_features_chunk, extract_features_for_project
from annotation.models import ImportJob, Project
from quality.models import QualityCycle, QualityRun, RunStatus
from quality.services.cycle import cycle_step_execute
from quality.services.jobs import JobNotFound, JobStateConflict
from tests.factories import ProjectFactory
from tests.quality.test_jobs import _jobs

pytestmark = pytest.mark.django_db


def _client(user: Any, *, csrf: bool = False) -> Client:
    c = Client(enforce_csrf_checks=csrf)
    c.force_login(user)
    return c


def _url(project: Project, kind: str, pk: int, action: str) -> str:
    return reverse(f"quality-job-{action}", args=[project.slug, kind, pk])


def _running_features(project: Project, **kw: Any) -> FeatureSet:
    fields = {
        "project": project,
        "backend": "logmel-stats",
        "status": JobStatus.RUNNING,
        "n_clips": 40,
        "n_done": 9,
        "n_failed": 1,
        "worker": "cpu-1@box",
        "worker_pid": 7,
    }
    return FeatureSet.objects.create(**(fields | kw))


def test_the_partial_renders_every_row_with_progress_bars(team: dict[str, Any]) -> None:
    project = team["project"]
    made = _jobs(project)
    fs = _running_features(project)
    rows = reverse("quality-jobs-rows", args=[project.slug])
    html = _client(team["reviewer"]).get(rows).content.decode()
    assert "<html" not in html  # the tables alone
    for key in ("imports", "feature_sets", "trainings", "cycles", "runs"):
        assert f'data-id="{made[key][0].pk}"' in html
    # 10 of 40 clips done (or failed): a bar at 25 %; the failed cycle's 2 of 4 steps at 50 %.
    assert '<progress class="job-progress" max="40" value="10"' in html and "25%" in html
    assert '<progress class="job-progress" max="4" value="2"' in html
    assert f'data-id="{fs.pk}" data-status="running"' in html
    assert "gave up after 3 attempt(s)" in html  # a failure with its reason
    assert "Retry" not in html and "Cancel" not in html  # reviewers see no buttons
    admin = _client(team["admin"]).get(rows).content.decode()
    assert _url(project, "cycle", made["cycles"][0].pk, "retry") in admin
    assert _url(project, "features", fs.pk, "cancel") in admin
    # A done feature set offers neither; a training cannot be cancelled.
    assert _url(project, "features", made["feature_sets"][0].pk, "cancel") not in admin
    assert _url(project, "training", made["trainings"][0].pk, "cancel") not in admin


def test_the_page_polls_the_partial_with_its_own_script(team: dict[str, Any]) -> None:
    project = team["project"]
    html = _client(team["reviewer"]).get(reverse("quality-jobs", args=[project.slug])).content
    html = html.decode()
    rows = reverse("quality-jobs-rows", args=[project.slug])
    assert f'id="jobs-live" data-rows-url="{rows}" data-refresh-ms="3000"' in html
    assert re.search(r'<script src="/static/refrain/jobs(\.[0-9a-f]{12})?\.js"></script>', html)
    assert Client().get("/static/refrain/jobs.js").status_code == 200


def test_the_api_carries_the_progress_counts(team: dict[str, Any]) -> None:
    project = team["project"]
    fs = _running_features(project)
    body = _client(team["reviewer"]).get(f"/api/v1/projects/{project.pk}/jobs").json()
    (row,) = [r for r in body["feature_sets"] if r["id"] == fs.pk]
    assert (row["done"], row["total"]) == (10, 40)
    assert body["trainings"] == [] or body["trainings"][0]["total"] is None


def test_retry_sends_a_failed_feature_set_again(
    team: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    project = team["project"]
    fs = _running_features(project, status=JobStatus.FAILED, error="decoder crashed")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = _client(team["admin"]).post(_url(project, "features", fs.pk, "retry"))
    assert response.status_code == 202, response.content
    assert response.json() == {"kind": "features", "id": fs.pk, "status": "queued"}
    assert len(sent) == 1  # the extraction message, sent once the row is committed
    fs.refresh_from_db()
    assert fs.status == JobStatus.QUEUED and fs.error == "" and fs.finished_at is None
    assert fs.sweep_notes[-1]["action"] == "retried"
    assert fs.sweep_notes[-1]["reason"] == "retried by admin (was: decoder crashed)"
    again = _client(team["admin"]).post(_url(project, "features", fs.pk, "retry"))
    assert again.status_code == 409 and again.json()["code"] == "job_state"


def test_retry_of_each_kind(team: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    project = team["project"]
    made = _jobs(project)
    admin = _client(team["admin"])
    failed = JobStatus.FAILED
    mv = made["trainings"][0]
    ModelVersion.objects.filter(pk=mv.pk).update(status=failed, error="out of memory")
    run = QualityRun.objects.create(project=project, status=RunStatus.FAILED, error="boom")
    folder = ImportJob.objects.create(
        project=project, source="/imports/a", status=failed, options={"folder": "/imports/a"}
    )
    upload = ImportJob.objects.create(project=project, source="upload.wav", status=failed)
    in_cycle = ModelVersion.objects.create(
        project=project,
        number=99,
        taxonomy_version=project.taxonomy_version,
        status=failed,
        task_id="quality-cycle:1:retrain",
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        for kind, row in [("training", mv), ("run", run), ("import", folder)]:
            response = admin.post(_url(project, kind, row.pk, "retry"))
            assert response.status_code == 202, (kind, response.content)
            row.refresh_from_db()
            assert row.status == "queued" and row.sweep_notes[-1]["action"] == "retried"
    assert len(sent) == 3
    for kind, row, why in [
        ("import", upload, "upload"),
        ("training", in_cycle, "retry the cycle"),
        ("run", made["runs"][0], "only a failed job"),  # done
    ]:
        response = admin.post(_url(project, kind, row.pk, "retry"))
        assert response.status_code == 409 and why in response.json()["detail"], response.json()
        row.refresh_from_db()
        assert row.status in ("failed", "done")


def test_retry_of_a_failed_cycle_queues_a_new_one(
    team: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    project = team["project"]
    old = _jobs(project)["cycles"][0]
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = _client(team["admin"]).post(_url(project, "cycle", old.pk, "retry"))
    assert response.status_code == 202
    new = QualityCycle.objects.get(pk=response.json()["id"])
    assert new.pk != old.pk and new.status == RunStatus.QUEUED and len(sent) == 1
    old.refresh_from_db()
    assert old.status == RunStatus.FAILED and f"as cycle {new.pk}" in old.sweep_notes[-1]["reason"]


def test_cancel_stops_a_feature_extraction_at_its_next_chunk(team: dict[str, Any]) -> None:
    project = team["project"]
    fs = _running_features(project)
    response = _client(team["admin"]).post(_url(project, "features", fs.pk, "cancel"))
    assert response.status_code == 202 and response.json()["status"] == "failed"
    fs.refresh_from_db()
    assert fs.status == JobStatus.FAILED and fs.error == "cancelled by admin"
    assert fs.worker == "" and fs.sweep_notes[-1]["action"] == "cancelled"
    # What the worker does with the set's remaining messages: nothing.
    assert extract_features_chunk(fs.pk, 3, [1, 2, 3])["skipped"] is True
    assert extract_features_for_project(project.pk, feature_set_id=fs.pk)["status"] == "failed"
    assert feature_set_finalize(feature_set=fs).status == JobStatus.FAILED
    fs.refresh_from_db()
    assert fs.error == "cancelled by admin" and fs.n_done == 9
    # Once stopped it is no longer cancellable, and can be retried.
    again = _client(team["admin"]).post(_url(project, "features", fs.pk, "cancel"))
    assert again.status_code == 409


def test_cancel_stops_a_cycle_before_its_next_step(team: dict[str, Any]) -> None:
    project = team["project"]
    cycle = QualityCycle.objects.create(
        project=project, status=RunStatus.RUNNING, steps_done=["retrain", "detect"]
    )
    response = _client(team["admin"]).post(_url(project, "cycle", cycle.pk, "cancel"))
    assert response.status_code == 202
    after = cycle_step_execute(cycle_id=cycle.pk, step="route")
    assert after.status == RunStatus.FAILED and after.steps_done == ["retrain", "detect"]
    assert after.error == "cancelled by admin"


def test_kinds_without_a_stopping_point_are_not_cancelled(team: dict[str, Any]) -> None:
    project = team["project"]
    mv = _jobs(project)["trainings"][0]  # running
    response = _client(team["admin"]).post(_url(project, "training", mv.pk, "cancel"))
    assert response.status_code == 409 and "cannot be cancelled" in response.json()["detail"]
    mv.refresh_from_db()
    assert mv.status == JobStatus.RUNNING


def test_bad_ids_and_another_projects_jobs_are_json_404s(team: dict[str, Any]) -> None:
    project = team["project"]
    theirs = _running_features(ProjectFactory())
    admin = _client(team["admin"])
    for kind, pk in [("features", theirs.pk), ("features", 0), ("nonsense", 1)]:
        for action in ("retry", "cancel"):
            response = admin.post(_url(project, kind, pk, action))
            assert response.status_code == 404, (kind, pk, action)
            assert response["Content-Type"] == "application/json"
            assert response.json()["code"] == "job_not_found"
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.RUNNING


def test_only_admins_may_retry_or_cancel_and_only_with_csrf(team: dict[str, Any]) -> None:
    project = team["project"]
    fs = _running_features(project)
    failed = _running_features(project, status=JobStatus.FAILED)
    urls = [
        _url(project, "features", fs.pk, "cancel"),
        _url(project, "features", failed.pk, "retry"),
    ]
    for url in urls:
        assert _client(team["ann"]).post(url).status_code == 403
        assert _client(team["reviewer"]).post(url).status_code == 403
        assert _client(team["outsider"]).post(url).status_code == 404
        assert Client().post(url).status_code == 302  # to the login page
        assert _client(team["admin"], csrf=True).post(url).status_code == 403  # no CSRF token
        assert _client(team["admin"]).get(url).status_code == 405
    fs.refresh_from_db()
    failed.refresh_from_db()
    assert fs.status == JobStatus.RUNNING and failed.status == JobStatus.FAILED
    for user in ("ann", "outsider"):
        rows = _client(team[user]).get(reverse("quality-jobs-rows", args=[project.slug]))
        assert rows.status_code in (403, 404)


def test_the_json_statuses_agree_with_the_api() -> None:
    from refrain.api import error_status

    assert error_status(JobNotFound("x")) == 404
    assert error_status(JobStateConflict("x")) == 409


def test_the_partial_query_count_is_pinned(
    team: dict[str, Any], django_assert_num_queries: Any
) -> None:
    project = team["project"]
    client = _client(team["admin"])
    url = reverse("quality-jobs-rows", args=[project.slug])
    client.get(url)
    for n in (1, 3):
        _jobs(project, n=n)
        # Session, user, project, membership, one query per kind (+ savepoint and release).
        with django_assert_num_queries(11):
            assert client.get(url).status_code == 200
