"""The quality and model endpoints of the API, and the dashboard's "Run relabel cycle now" button:
who may read and start what, filters, 4xx answers for bad input, and that a start queues exactly one
cycle (an unfinished one is resumed, never duplicated)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from active_learning.models import ModelVersion
from quality.models import QualityCycle, RunStatus
from quality.services.consensus import consensus_recompute_project
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from tests.factories import UserFactory
from tests.quality.builders import PLANTED, make_model, make_world

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def world(tmp_path: Path, fast_passwords: None):
    w = make_world()
    make_model(w)
    run = quality_run_detect(project=w.project, budget=len(w.clips))
    issues_route(run=run, budget=2)
    consensus_recompute_project(project=w.project)
    return w


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_reviewers_list_issues_with_filters(world) -> None:
    c = _client(world.users["reviewer"])
    url = f"{API}/projects/{world.project.pk}/issues"
    everything = c.get(url).json()
    assert len(everything) == len(world.clips)
    assert [i["rank"] for i in everything] == sorted(i["rank"] for i in everything)
    routed = c.get(url, {"status": "routed"}).json()
    assert len(routed) == 2 and all(i["relabel_task_id"] for i in routed)
    siblings = c.get(url, {"type": "wrong_sibling", "depth": 1}).json()
    assert {i["clip_id"] for i in siblings} >= {world.clips[i].pk for i in PLANTED}
    planted = world.clips[0].pk
    by_node = c.get(url, {"node": PLANTED[0]}).json()
    assert by_node and all(i["node"] == PLANTED[0] for i in by_node)
    issue = next(i for i in by_node if i["clip_id"] == planted)
    assert issue["issue_type"] == "wrong_sibling" and world.truth[0] in issue["suggested"]
    page = c.get(url, {"limit": 5, "offset": 5}).json()
    assert [i["id"] for i in page] == [i["id"] for i in everything[5:10]]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"type": "nonsense"}, 422),
        ({"status": "lost"}, 422),
        ({"depth": -1}, 422),
        ({"limit": 100000}, 422),
        ({"node": "No/Such"}, 422),
    ],
)
def test_bad_issue_filters_are_4xx_with_a_message(world, params, code) -> None:
    response = _client(world.users["reviewer"]).get(
        f"{API}/projects/{world.project.pk}/issues", params
    )
    assert response.status_code == code
    assert response.json()["detail"]


def test_annotators_and_outsiders_cannot_read_quality(world) -> None:
    pid = world.project.pk
    urls = [f"{API}/projects/{pid}/issues", f"{API}/projects/{pid}/cycles"]
    urls.append(f"{API}/projects/{pid}/models")
    for url in urls:
        assert _client(world.users["ann1"]).get(url).status_code == 403
        assert _client(UserFactory(username="outsider-api")).get(url).status_code == 404


def test_admins_start_one_cycle_and_a_second_start_resumes_it(
    world, django_capture_on_commit_callbacks
) -> None:
    pid = world.project.pk
    admin = _client(world.users["admin"])
    assert _client(world.users["reviewer"]).post(f"{API}/projects/{pid}/cycles").status_code == 403
    with django_capture_on_commit_callbacks() as sent:
        first = admin.post(f"{API}/projects/{pid}/cycles")
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["created"] and body["status"] == RunStatus.QUEUED
    assert body["steps"] == ["retrain", "detect", "route", "acquire"] and body["steps_done"] == []
    assert len(sent) == 1  # the trigger goes to the broker once the row commits
    with django_capture_on_commit_callbacks() as sent_again:
        second = admin.post(f"{API}/projects/{pid}/cycles")
    assert second.status_code == 202 and second.json()["id"] == body["id"]
    assert not second.json()["created"] and len(sent_again) == 1
    assert QualityCycle.objects.filter(project=world.project).count() == 1

    listed = _client(world.users["reviewer"]).get(f"{API}/projects/{pid}/cycles").json()
    assert [c["id"] for c in listed] == [body["id"]]
    got = _client(world.users["reviewer"]).get(f"{API}/cycles/{body['id']}")
    assert got.status_code == 200 and got.json()["trigger"] == "manual"
    hidden = _client(UserFactory(username="outsider-cycle")).get(f"{API}/cycles/{body['id']}")
    assert hidden.status_code == 404 and "not found" in hidden.json()["detail"]
    assert admin.get(f"{API}/cycles/999999").status_code == 404


def test_models_are_listed_and_admins_queue_training(
    world, django_capture_on_commit_callbacks
) -> None:
    pid = world.project.pk
    listed = _client(world.users["reviewer"]).get(f"{API}/projects/{pid}/models").json()
    assert len(listed) == 1 and listed[0]["status"] == "done" and listed[0]["number"] == 1
    admin = _client(world.users["admin"])
    bad = admin.post(
        f"{API}/projects/{pid}/models", {"kind": "svm"}, content_type="application/json"
    )
    assert bad.status_code == 422
    folds = admin.post(
        f"{API}/projects/{pid}/models", {"n_folds": 1}, content_type="application/json"
    )
    assert folds.status_code == 422
    reviewer = _client(world.users["reviewer"])
    assert reviewer.post(f"{API}/projects/{pid}/models", {}, "application/json").status_code == 403
    with django_capture_on_commit_callbacks() as sent:
        queued = admin.post(
            f"{API}/projects/{pid}/models", {"n_folds": 3}, content_type="application/json"
        )
    assert queued.status_code == 202, queued.content
    body = queued.json()
    assert body["number"] == 2 and body["status"] == "queued" and body["n_folds"] == 3
    assert body["kind"] == world.project.loop_policy.model_kind and len(sent) == 1
    with django_capture_on_commit_callbacks():  # no body at all: every default
        empty = admin.post(f"{API}/projects/{pid}/models", content_type="application/json")
    assert empty.status_code == 202 and empty.json()["n_folds"] == 5
    assert ModelVersion.objects.filter(project=world.project).count() == 3


def test_dashboard_button_queues_a_cycle_for_admins_only(
    world, django_capture_on_commit_callbacks
) -> None:
    slug = world.project.slug
    dashboard = reverse("quality-dashboard", args=[slug])
    start = reverse("quality-cycle-start", args=[slug])
    assert b'id="cycle-start"' in _client(world.users["admin"]).get(dashboard).content
    assert b'id="cycle-start"' not in _client(world.users["reviewer"]).get(dashboard).content
    assert _client(world.users["reviewer"]).post(start).status_code == 403
    admin = _client(world.users["admin"])
    assert admin.get(start).status_code == 405
    with django_capture_on_commit_callbacks() as sent:
        response = admin.post(start, follow=True)
    assert response.redirect_chain[-1][0] == dashboard and len(sent) == 1
    cycle = QualityCycle.objects.get(project=world.project)
    assert f"Relabel cycle {cycle.pk} queued".encode() in response.content
