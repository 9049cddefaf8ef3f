"""The REST API: next-task and submit (shapes, statuses, pinned query counts), tokens, OpenAPI."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Annotation, Assignment, Task
from annotation.services.tokens import api_token_create
from tests.factories import ClipFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _tasks(project, n, **kw):
    return [
        Task.objects.create(project=project, clip=ClipFactory(project=project), **kw)
        for _ in range(n)
    ]


def test_openapi_is_served(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/projects/{project_id}/tasks/next" in paths
    assert "/api/v1/tasks/{task_id}/annotations" in paths


def test_next_then_submit_round_trip(team):
    (task,) = _tasks(team["project"], 1, reason="active_learning:uncertainty")
    c = _client(team["ann"])
    r = c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["task_id"] == task.pk and body["kind"] == "label"
    assert body["reason"] == "active_learning:uncertainty"
    assert body["clip"]["audio_url"] == f"/clips/{task.clip_id}/audio"
    assert body["clip"]["name"] == f"Clip {task.clip_id}"  # blind: no file name
    assert body["taxonomy_version"]["id"] == team["project"].taxonomy_version_id
    assert body["others"] is None
    payload = {"labels": ["Rock/Punk", "Electronic/House"], "idempotency_key": "abc"}
    r = c.post(body["submit_url"], payload, content_type="application/json")
    assert r.status_code == 201, r.content
    assert r.json()["labels"] == ["Rock/Punk", "Electronic/House"]
    assert set(r.json()["implied"]) == {"Rock", "Electronic"}
    r2 = c.post(body["submit_url"], payload, content_type="application/json")
    assert r2.status_code == 200 and r2.json()["id"] == r.json()["id"]
    # The 201 answer's labels come from the taxonomy index, the replay's from the stored rows.
    assert (r2.json()["labels"], r2.json()["implied"]) == (r.json()["labels"], r.json()["implied"])
    assert Annotation.objects.count() == 1
    assert c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next").status_code == 204


def test_non_blind_projects_show_earlier_labels(team):
    project = team["project"]
    project.blind = False
    project.overlap = 2
    project.save()
    (task,) = _tasks(project, 1, overlap=2)
    c1 = _client(team["ann"])
    c1.post(f"/api/v1/projects/{project.pk}/tasks/next")
    c1.post(
        f"/api/v1/tasks/{task.pk}/annotations",
        {"labels": ["Jazz/Bebop"]},
        content_type="application/json",
    )
    r = _client(team["ann2"]).post(f"/api/v1/projects/{project.pk}/tasks/next")
    assert r.json()["others"] == [{"labels": ["Jazz/Bebop"], "unsure": False}]


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"labels": ["Rock/Polka"]}, 422, "Rock/Polka"),
        ({"labels": []}, 422, "at least one label"),
        ({"labels": ["Rock/Punk"], "note": "x" * 5000}, 422, "limit is 2000"),
        ({"labels": ["Rock/Punk"], "taxonomy_version": 999999}, 409, "taxonomy version"),
        ({"labels": "Rock/Punk"}, 422, ""),
        ({"labels": ["Rock/Punk"], "time_spent_ms": -5}, 422, ""),
        ({"labels": ["Rock/Punk"], "idempotency_key": "k" * 101}, 422, ""),
    ],
)
def test_bad_submissions_get_a_4xx_with_a_message_and_write_nothing(
    team, payload, status, fragment
):
    (task,) = _tasks(team["project"], 1)
    c = _client(team["ann"])
    c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next")
    r = c.post(f"/api/v1/tasks/{task.pk}/annotations", payload, content_type="application/json")
    assert r.status_code == status, r.content
    assert fragment in str(r.json()["detail"])
    assert not Annotation.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.ACTIVE


def test_expired_lease_is_409(team):
    (task,) = _tasks(team["project"], 1)
    c = _client(team["ann"])
    c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next")
    Assignment.objects.update(lease_expires_at="2000-01-01T00:00:00Z")
    r = c.post(
        f"/api/v1/tasks/{task.pk}/annotations",
        {"labels": ["Rock/Punk"]},
        content_type="application/json",
    )
    assert r.status_code == 409 and r.json()["code"] == "lease_expired"
    assert "expired" in r.json()["detail"]


def test_task_of_another_project_is_404(team):
    from tests.factories import ProjectFactory

    (task,) = _tasks(ProjectFactory(), 1)
    r = _client(team["ann"]).post(
        f"/api/v1/tasks/{task.pk}/annotations",
        {"labels": ["Rock/Punk"]},
        content_type="application/json",
    )
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_skip_and_renew(team):
    (task,) = _tasks(team["project"], 1)
    c = _client(team["ann"])
    c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next")
    assert c.post(f"/api/v1/tasks/{task.pk}/lease").status_code == 200
    assert c.post(f"/api/v1/tasks/{task.pk}/skip").status_code == 204
    assert c.post(f"/api/v1/tasks/{task.pk}/lease").status_code == 409


def test_token_auth_and_session_csrf(team):
    _tasks(team["project"], 1)
    _, token = api_token_create(user=team["ann"])
    c = Client()
    url = f"/api/v1/projects/{team['project'].pk}/tasks/next"
    assert c.post(url).status_code == 401
    assert c.post(url, HTTP_AUTHORIZATION="Bearer rfn_wrong").status_code == 401
    assert c.post(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(team["ann"])
    assert strict.post(url).status_code in (401, 403)  # session writes need the CSRF token


def test_next_task_query_count_is_pinned(team, django_assert_num_queries):
    _tasks(team["project"], 30)
    c = _client(team["ann"])
    url = f"/api/v1/projects/{team['project'].pk}/tasks/next"
    # ATOMIC_REQUESTS' SAVEPOINT/RELEASE (BEGIN/COMMIT outside tests, not counted), session,
    # user, the service's SAVEPOINT, membership lock, held tasks, candidate lock, slot count,
    # insert, RELEASE.
    with django_assert_num_queries(11):
        assert c.post(url).status_code == 200
    # Asking again returns the held task: no candidate scan, no insert.
    with django_assert_num_queries(8):
        assert c.post(url).status_code == 200


def test_submit_query_count_is_pinned(team, django_assert_num_queries):
    (task,) = _tasks(team["project"], 1)
    c = _client(team["ann"])
    c.post(f"/api/v1/projects/{team['project'].pk}/tasks/next")
    url = f"/api/v1/tasks/{task.pk}/annotations"
    payload = {"labels": ["Rock/Punk", "Jazz/Bebop"], "idempotency_key": "q1"}
    c.post(url, {"labels": ["Nope"]}, content_type="application/json")  # warms the index cache
    # request SAVEPOINT, session, user, service SAVEPOINT, assignment lock, SAVEPOINT, annotation,
    # labels, RELEASE, assignment update, task update, RELEASE, request RELEASE. The taxonomy index
    # is cached per process; the idempotency key is checked by its unique constraint (no lookup
    # unless the insert conflicts) and the answer's labels come from the index (no read-back).
    with django_assert_num_queries(13):
        assert c.post(url, payload, content_type="application/json").status_code == 201


def test_blind_relabel_does_not_say_why_the_clip_came_back(team):
    project = team["project"]
    _tasks(project, 1, kind=Task.Kind.RELABEL, reason="label_issue:wrong_branch")
    body = _client(team["ann"]).post(f"/api/v1/projects/{project.pk}/tasks/next").json()
    assert body["kind"] == "relabel" and body["reason"] == "second_opinion"
    project.blind = False
    project.save()
    _tasks(project, 1, kind=Task.Kind.RELABEL, reason="label_issue:wrong_branch")
    body = _client(team["ann2"]).post(f"/api/v1/projects/{project.pk}/tasks/next").json()
    assert body["reason"] == "label_issue:wrong_branch"
