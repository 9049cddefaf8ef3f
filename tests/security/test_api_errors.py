"""Every error under /api/v1/ is JSON ``{"detail", "code"}`` and documented; an outage is a 503 with
``Retry-After``; body types, NUL characters and out-of-range numbers are 422s, never 2xx or 500."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import Client
from kombu.exceptions import OperationalError as BrokerError

from active_learning.models import ModelVersion
from annotation.integrations.labelstudio.services import LabelStudioSyncError
from annotation.models import Annotation, Project, Task
from annotation.services.annotations import LabelError
from annotation.services.clip_files import ClipFileUnavailable
from annotation.services.enqueue import Manual, task_enqueue
from annotation.services.review import ReviewError
from annotation.services.tasks import (
    InvalidLabels,
    LeaseExpired,
    TaskNotFound,
)
from annotation.services.tokens import TokenError
from quality.services.cycle import CycleBusy
from quality.services.loop import LoopSettingsError
from refrain.api import COMMON_ERRORS, ERROR_STATUS, api, error_kind, error_status
from refrain.errors import NotFound, PermissionDenied, Throttled
from taxonomy.formats import TaxonomyFormatError
from tests.factories import ClipFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _client(user: Any) -> Client:
    c = Client(raise_request_exception=False)
    c.force_login(user)
    return c


def _is_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_unknown_api_route_is_a_json_404() -> None:
    _is_error(Client().get(f"{API}/no/such/route"), 404, "not_found")
    _is_error(Client().post("/api/v2/projects"), 404, "not_found")


def test_wrong_method_is_a_json_405(team) -> None:
    response = _client(team["admin"]).delete(f"{API}/projects")
    _is_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_anonymous_and_denied_are_json(team) -> None:
    pid = team["project"].pk
    _is_error(Client().get(f"{API}/projects/{pid}"), 401, "not_authenticated")
    _is_error(_client(team["ann"]).get(f"{API}/projects/{pid}/members"), 403, "permission_denied")
    _is_error(_client(team["outsider"]).get(f"{API}/projects/{pid}"), 404, "not_found")


def test_unexpected_exception_is_a_logged_json_500_that_commits_nothing(
    team, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import annotation.api

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in shaping")

    monkeypatch.setattr(annotation.api, "_project_out", broken)
    caplog.set_level(logging.ERROR, logger="refrain.errors")
    admin = _client(team["admin"])
    version = team["project"].taxonomy_version_id
    payload = {"name": "Half made", "taxonomy_version_id": version}
    team["admin"].is_staff = True
    team["admin"].save()
    response = admin.post(f"{API}/projects", payload, content_type="application/json")
    _is_error(response, 500, "server_error")
    assert "boom" not in response.json()["detail"]
    assert any("boom in shaping" in (r.exc_text or "") for r in caplog.records)
    # The project was written before the failure; the answer must not commit it.
    assert not Project.objects.filter(name="Half made").exists()


def test_validation_error_has_the_documented_shape(team) -> None:
    pid = team["project"].pk
    response = _client(team["admin"]).post(
        f"{API}/projects/{pid}/tasks",
        {"clip_ids": "nope", "priority": "high"},
        content_type="application/json",
    )
    body = _is_error(response, 422, "validation_error")
    assert {tuple(e["loc"]) for e in body["errors"]} >= {
        ("body", "payload", "clip_ids"),
        ("body", "payload", "priority"),
    }
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    schema = api.get_openapi_schema()
    documented = schema["components"]["schemas"]["ApiError"]
    assert set(documented["properties"]) == set(body)
    assert set(documented["required"]) == {"detail", "code"}
    response_422 = schema["paths"][f"{API}/projects/{{project_id}}/tasks"]["post"]["responses"][422]
    assert response_422["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiError"
    }


def test_every_operation_documents_its_error_statuses() -> None:
    schema = api.get_openapi_schema()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = {int(s) for s in operation["responses"]}
            assert documented >= set(COMMON_ERRORS), (method, path, documented)
            for status in (401, 403, 404, 422, 429, 503):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith("/ApiError"), (method, path, status)
            assert "Retry-After" in operation["responses"][503]["headers"]


# --- outages --------------------------------------------------------------------------------------


@pytest.fixture
def database_blip(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next query fails as if PostgreSQL had gone away (the driver's boundary), once."""
    real = CursorWrapper.execute
    state = {"failed": False}

    def execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        if not state["failed"] and "annotation_membership" in sql:
            state["failed"] = True
            raise OperationalError("server closed the connection unexpectedly")
        return real(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", execute)


def test_database_outage_is_a_json_503_with_retry_after(team, database_blip: None) -> None:
    response = _client(team["admin"]).get(f"{API}/projects")
    body = _is_error(response, 503, "database_unavailable")
    assert int(response["Retry-After"]) > 0
    assert "closed" not in body["detail"]  # no driver internals in the answer


def test_database_outage_on_a_page_is_a_short_html_503(team, database_blip: None) -> None:
    response = _client(team["admin"]).get("/")
    assert response.status_code == 503, response.status_code
    assert response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) > 0
    assert b"unavailable" in response.content


@pytest.mark.django_db(transaction=True)
def test_broker_down_when_enqueueing_is_a_503(
    team, monkeypatch: pytest.MonkeyPatch, fast_passwords: None
) -> None:
    """Training is enqueued on commit (ATOMIC_REQUESTS); the broker failing then is still a 503."""
    from active_learning import tasks

    def broker_down(*args: Any, **kwargs: Any) -> Any:
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.train_project_model, "apply_async", broker_down)
    pid = team["project"].pk
    response = _client(team["admin"]).post(
        f"{API}/projects/{pid}/models", {}, content_type="application/json"
    )
    _is_error(response, 503, "broker_unavailable")
    assert int(response["Retry-After"]) > 0


# --- input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"x"', "5", "true", "null"])
def test_non_object_bodies_are_422_and_change_nothing(team, body: str) -> None:
    project = team["project"]
    admin = _client(team["admin"])
    before = (project.overlap, project.blind, project.lease_seconds)
    patched = admin.patch(f"{API}/projects/{project.pk}", body, content_type="application/json")
    _is_error(patched, 422, "validation_error")
    project.refresh_from_db()
    assert (project.overlap, project.blind, project.lease_seconds) == before
    trained = admin.post(f"{API}/projects/{project.pk}/models", body, "application/json")
    _is_error(trained, 422, "validation_error")
    assert not ModelVersion.objects.filter(project=project).exists()


def test_malformed_json_is_a_json_400(team) -> None:
    pid = team["project"].pk
    response = _client(team["admin"]).patch(
        f"{API}/projects/{pid}", "{nope", content_type="application/json"
    )
    _is_error(response, 400, "bad_request")


@pytest.fixture
def held_task(team) -> Task:
    project = team["project"]
    clip = ClipFactory(project=project)
    task_enqueue(project=project, sources=Manual.for_clips([clip.pk]))
    _client(team["ann"]).post(f"{API}/projects/{project.pk}/tasks/next")
    return Task.objects.get(project=project, clip=clip)


@pytest.mark.parametrize(
    "payload",
    [
        {"labels": ["Rock/Punk"], "note": "fine\x00then"},
        {"labels": ["Rock/Punk"], "idempotency_key": "k\x00"},
        {"labels": ["Rock\x00/Punk"]},
        {"labels": ["Rock/Punk"], "\x00": 1},
    ],
)
def test_nul_characters_in_a_body_are_422(team, held_task: Task, payload: dict) -> None:
    response = _client(team["ann"]).post(
        f"{API}/tasks/{held_task.pk}/annotations", json.dumps(payload), "application/json"
    )
    body = _is_error(response, 422, "validation_error")
    assert body["errors"][0]["type"] == "string_nul"
    assert not Annotation.objects.exists()


def test_nul_characters_in_names_and_queries_are_422(team) -> None:
    team["admin"].is_staff = True
    team["admin"].save()
    admin = _client(team["admin"])
    pid = team["project"].pk
    version = team["project"].taxonomy_version_id
    created = admin.post(
        f"{API}/projects", {"name": "a\x00b", "taxonomy_version_id": version}, "application/json"
    )
    _is_error(created, 422, "validation_error")
    assert not Project.objects.filter(name__startswith="a").exists()
    for url in (
        f"{API}/projects/{pid}/tasks?status=open%00",
        f"{API}/projects/{pid}/issues?node=Rock%00",
        f"{API}/projects/{pid}/clips?x%00=1",
    ):
        _is_error(admin.get(url), 422, "validation_error")
    invited = admin.post(
        f"{API}/projects/{pid}/members", {"user": "ann\x00"}, content_type="application/json"
    )
    _is_error(invited, 422, "validation_error")


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", "/projects/{pid}/clips?offset=-1", None),
        ("get", "/projects/{pid}/clips?offset=99999999999999999999", None),
        ("get", "/projects/{pid}/clips?limit=-5", None),
        ("get", "/projects/{pid}/clips?limit=1000000", None),
        ("get", "/projects/{pid}/tasks?offset=9223372036854775807", None),
        ("get", "/projects/{pid}/annotations?offset=-3", None),
        ("get", "/projects/{pid}/issues?offset=99999999999999999999", None),
        ("get", "/projects/{pid}/models?limit=0", None),
        ("get", "/projects/{pid}/cycles?limit=-1", None),
        ("get", "/projects/99999999999999999999", None),
        ("get", "/clips/9223372036854775808", None),
        ("get", "/cycles/0", None),
        ("post", "/projects/{pid}/models", {"seed": 2**70}),
        ("post", "/projects/{pid}/models", {"seed": -1}),
        ("post", "/projects/{pid}/tasks", {"clip_ids": [2**64]}),
        ("post", "/projects/{pid}/tasks", {"clip_ids": [1], "priority": 1e300}),
        ("patch", "/projects/{pid}", {"taxonomy_version_id": 2**63}),
        ("post", "/projects/{pid}/tasks/next?exclude=99999999999999999999", None),
    ],
)
def test_out_of_range_numbers_are_422(team, method: str, url: str, body: Any) -> None:
    admin = _client(team["admin"])
    full = API + url.format(pid=team["project"].pk)
    if body is None:
        response = getattr(admin, method)(full)
    else:
        response = getattr(admin, method)(full, body, content_type="application/json")
    _is_error(response, 422, "validation_error")
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_body_checks_hold_whatever_the_declared_content_type(team, content_type: str) -> None:
    """The API parses any non-form body as JSON, so the object and NUL checks cannot be dodged."""
    project = team["project"]
    admin = _client(team["admin"])
    patched = admin.patch(f"{API}/projects/{project.pk}", "[]", content_type=content_type)
    _is_error(patched, 422, "validation_error")
    trained = admin.post(f"{API}/projects/{project.pk}/models", "[]", content_type=content_type)
    _is_error(trained, 422, "validation_error")
    assert not ModelVersion.objects.exists()
    invited = admin.post(
        f"{API}/projects/{project.pk}/members", '{"user": "a\\u0000"}', content_type=content_type
    )
    _is_error(invited, 422, "validation_error")


def test_deeply_nested_json_is_a_4xx(team) -> None:
    pid = team["project"].pk
    admin = _client(team["admin"])
    for depth in (900, 100_000):
        body = '{"overlap":' + "[" * depth + "]" * depth + "}"
        response = admin.patch(f"{API}/projects/{pid}", body, content_type="application/json")
        assert 400 <= response.status_code < 500, (depth, response.status_code)
        _is_error(response, response.status_code)


@pytest.mark.parametrize(
    "error",
    [
        BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        OperationalError("could not connect to server"),
    ],
    ids=["broker", "database"],
)
def test_outage_while_the_operation_runs_is_a_503_for_api_and_page(
    team, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The cycle's enqueue fails inside the operation (the API's handler) and inside a page view
    (the middleware): both answer 503 with Retry-After, the API in JSON."""
    import quality.api
    import quality.views

    def down(**kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(quality.api, "cycle_enqueue", down)
    monkeypatch.setattr(quality.views, "cycle_enqueue", down)
    admin = _client(team["admin"])
    project = team["project"]
    response = admin.post(f"{API}/projects/{project.pk}/cycles")
    code = "broker_unavailable" if isinstance(error, BrokerError) else "database_unavailable"
    _is_error(response, 503, code)
    assert int(response["Retry-After"]) > 0
    page = admin.post(f"/p/{project.slug}/quality/cycle/")
    assert page.status_code == 503 and page["Content-Type"].startswith("text/html")
    assert int(page["Retry-After"]) > 0


def test_project_policy_bounds_are_in_the_schema() -> None:
    schema = api.get_openapi_schema()["components"]["schemas"]
    for name in ("ProjectIn", "ProjectPatch"):
        props = schema[name]["properties"]
        flat = {k: v.get("anyOf", [v])[0] for k, v in props.items()}
        assert (flat["overlap"]["minimum"], flat["overlap"]["maximum"]) == (1, 20), name
        assert (flat["lease_seconds"]["minimum"], flat["lease_seconds"]["maximum"]) == (60, 86400)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (TaskNotFound("x"), 404, "task_not_found"),
        (LeaseExpired("x"), 409, "lease_expired"),
        (InvalidLabels("x"), 422, "invalid_labels"),
        (ReviewError("x"), 422, "invalid_review"),
        (LabelError("x"), 422, "invalid"),
        (TokenError("x"), 422, "invalid"),
        (LoopSettingsError("x"), 422, "invalid"),
        (NotFound("x"), 404, "not_found"),
        (ClipFileUnavailable("x"), 404, "not_found"),
        (PermissionDenied("x"), 403, "permission_denied"),
        (CycleBusy(None), 409, "conflict"),
        (Throttled(retry_after=90), 429, "throttled"),
        (LabelStudioSyncError("x"), 503, "unavailable"),
        (TaxonomyFormatError("x"), 422, "invalid"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_application_error_has_one_status_in_the_table(
    error: Exception, status: int, code: str
) -> None:
    """Services raise kinds (refrain.errors) and carry no HTTP status; the API's table decides."""
    assert not hasattr(error, "status")
    assert error_status(error) == status
    kind = error_kind(error)
    assert kind is not None and ERROR_STATUS[kind] == status
    assert getattr(error, "code", kind.code) == code
    assert error_status(RuntimeError("x")) is None


def test_an_application_error_is_the_same_status_for_the_api_and_a_page(
    team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle already running (a Conflict) raised in the operation and in a page view: the API
    answers its JSON 409, the page (through the error middleware) a 409 with the message."""
    import quality.api
    import quality.views

    def busy(**kwargs: Any) -> Any:
        raise CycleBusy(None)

    monkeypatch.setattr(quality.api, "cycle_enqueue", busy)
    monkeypatch.setattr(quality.views, "cycle_enqueue", busy)
    admin = _client(team["admin"])
    project = team["project"]
    body = _is_error(admin.post(f"{API}/projects/{project.pk}/cycles"), 409, "conflict")
    assert "already running" in body["detail"]
    page = admin.post(f"/p/{project.slug}/quality/cycle/")
    assert page.status_code == 409 and b"already running" in page.content


def test_pages_answer_not_found_and_denied_from_the_same_kinds(team) -> None:
    slug = team["project"].slug
    assert _client(team["outsider"]).get(f"/p/{slug}/annotate/").status_code == 404
    denied = _client(team["ann"]).get(f"/p/{slug}/members/")
    assert denied.status_code == 403 and b"admin" in denied.content
