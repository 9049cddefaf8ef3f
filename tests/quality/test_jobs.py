"""The jobs page and its API: every kind of background job with its worker, heartbeat, attempts,
what the sweep did and errors; reviewers and admins only; query counts pinned."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import ImportJob, Project
from quality.models import QualityCycle, QualityRun, RunStatus
from refrain.jobs import sweep_note

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _client(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _jobs(project: Project, n: int = 1) -> dict[str, Any]:
    """``n`` jobs of each kind; the first training stale (its worker silent for ten minutes) and
    resumed once by the sweep, the first cycle failed with a reason."""
    now = timezone.now()
    first = ModelVersion.objects.filter(project=project).count() + 1
    made: dict[str, Any] = {}
    for i in range(n):
        made.setdefault("imports", []).append(
            ImportJob.objects.create(
                project=project, source=f"/imports/batch-{i}", n_imported=5, n_failed=1
            )
        )
        made.setdefault("feature_sets", []).append(
            FeatureSet.objects.create(
                project=project,
                backend="logmel-stats",
                status=JobStatus.DONE,
                n_clips=6,
                n_done=5,
                n_failed=1,
                attempts=1,
                worker="cpu-1@box",
                worker_pid=11,
            )
        )
        made.setdefault("trainings", []).append(
            ModelVersion.objects.create(
                project=project,
                number=first + i,
                taxonomy_version=project.taxonomy_version,
                status=JobStatus.RUNNING,
                attempts=2,
                worker="gpu-7@trainer",
                worker_pid=4242,
                heartbeat_at=now - timedelta(minutes=10) if i == 0 else now,
                sweep_notes=[sweep_note("resumed", "worker gpu-3@trainer does not answer")],
                metrics={"per_node": list(range(1000))},
            )
        )
        made.setdefault("cycles", []).append(
            QualityCycle.objects.create(
                project=project,
                status=RunStatus.FAILED if i == 0 else RunStatus.DONE,
                steps_done=["retrain", "detect"],
                attempts=3,
                error="gave up after 3 attempt(s)" if i == 0 else "",
            )
        )
        made.setdefault("runs", []).append(
            QualityRun.objects.create(
                project=project, status=RunStatus.DONE, n_issues=4, n_routed=2
            )
        )
    return made


@pytest.mark.parametrize("role", ["admin", "reviewer"])
def test_the_page_shows_every_kind_of_job_with_its_worker_and_resumes(
    team: dict[str, Any], role: str
) -> None:
    project = team["project"]
    made = _jobs(project)
    html = _client(team[role]).get(reverse("quality-jobs", args=[project.slug])).content.decode()
    for key in ("imports", "feature_sets", "trainings", "cycles", "runs"):
        assert f'data-id="{made[key][0].pk}"' in html
    assert "/imports/batch-0" in html and "5 imported, 0 duplicate, 1 failed" in html
    assert "6/6 clips (1 failed)" in html and "2/4 steps: retrain, detect" in html
    assert "gpu-7@trainer · pid 4242" in html
    assert "resumed: worker gpu-3@trainer does not answer" in html
    assert "gave up after 3 attempt(s)" in html
    # The silent training is marked stale.
    assert (
        f'class="job-training stale" data-kind="training" data-id="{made["trainings"][0].pk}"'
        in html
    )
    ages = [int(a) for a in re.findall(r"(\d+) s ago", html)]
    assert ages and 600 <= max(ages) < 900


def test_annotators_and_outsiders_are_refused(team: dict[str, Any]) -> None:
    project = team["project"]
    url = reverse("quality-jobs", args=[project.slug])
    assert _client(team["ann"]).get(url).status_code == 403
    assert _client(team["outsider"]).get(url).status_code == 404
    api = f"{API}/projects/{project.pk}/jobs"
    assert _client(team["ann"]).get(api).status_code == 403
    assert _client(team["outsider"]).get(api).status_code == 404


def test_the_project_nav_links_the_page_for_reviewers_only(team: dict[str, Any]) -> None:
    project = team["project"]
    link = reverse("quality-jobs", args=[project.slug])
    review = reverse("review-list", args=[project.slug])
    assert f'href="{link}"' in _client(team["reviewer"]).get(review).content.decode()
    annotate = reverse("annotate", args=[project.slug])
    assert f'href="{link}"' not in _client(team["ann"]).get(annotate).content.decode()


def test_the_api_lists_the_same_jobs(team: dict[str, Any]) -> None:
    project = team["project"]
    made = _jobs(project, n=2)
    body = _client(team["reviewer"]).get(f"{API}/projects/{project.pk}/jobs").json()
    assert body["stale_seconds"] == 120
    for key in ("imports", "feature_sets", "trainings", "cycles", "runs"):
        assert [j["id"] for j in body[key]] == [r.pk for r in reversed(made[key])]
    stale = body["trainings"][1]
    assert stale["id"] == made["trainings"][0].pk and stale["stale"] is True
    assert stale["heartbeat_age_s"] >= 600 and stale["worker"] == "gpu-7@trainer"
    assert stale["attempts"] == 2 and stale["notes"][0]["action"] == "resumed"
    assert body["trainings"][0]["stale"] is False
    assert body["cycles"][1]["error"] == "gave up after 3 attempt(s)"
    assert (
        len(_client(team["admin"]).get(f"{API}/projects/{project.pk}/jobs?limit=1").json()["runs"])
        == 1
    )


def test_query_counts_are_pinned_and_do_not_grow_with_the_jobs(
    team: dict[str, Any], django_assert_num_queries: Any
) -> None:
    project = team["project"]
    page = _client(team["reviewer"])
    api = _client(team["reviewer"])
    url = reverse("quality-jobs", args=[project.slug])
    page.get(url)  # warm the session
    api.get(f"{API}/projects/{project.pk}/jobs")
    for n in (1, 3):
        _jobs(project, n=n)
        # Session, user, project, membership, one query per kind of job (+ ATOMIC_REQUESTS'
        # savepoint and release).
        with django_assert_num_queries(11):
            assert page.get(url).status_code == 200
        with django_assert_num_queries(10):
            assert api.get(f"{API}/projects/{project.pk}/jobs").status_code == 200
