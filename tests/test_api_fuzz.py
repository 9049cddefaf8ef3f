"""Every API route, fed junk, answers 4xx (or 2xx), never 500: the "bad input is a 4xx with a
message" rule checked across the whole OpenAPI schema rather than endpoint by endpoint."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from django.test import Client

from refrain.api import api

pytestmark = pytest.mark.django_db

JUNK_IDS = ["0", "-1", "99999999999999999999", "abc"]
BODIES: list[Any] = [
    None,
    "",
    "{not json",
    "[]",
    "null",
    json.dumps({"name": 5, "labels": "Rock", "kind": ["x"], "n_folds": "many"}),
    json.dumps({"labels": [None, 3, {"a": 1}], "role": "emperor", "user": ""}),
    json.dumps({"x" * 300: "y" * 10000}),
]
QUERIES = [{}, {"limit": "-5", "offset": "x", "depth": "deep", "type": "?", "status": "%00"}]


def _routes() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema()
    out = []
    for path, ops in schema["paths"].items():
        for method in ops:
            out.append((method.upper(), path))
    return out


@pytest.fixture
def clients(team) -> list[Client]:
    logged = Client()
    logged.force_login(team["admin"])
    return [Client(), logged]


@pytest.fixture
def real_ids(team) -> list[str]:
    """Ids that exist (the team's project, its taxonomy version, a clip, a task), so junk bodies
    reach the endpoints' own validation rather than stopping at a 404."""
    from annotation.models import Task
    from annotation.services.enqueue import Manual, task_enqueue
    from tests.factories import ClipFactory

    project = team["project"]
    clip = ClipFactory(project=project)
    task_enqueue(project=project, sources=Manual.for_clips([clip.pk]))
    task = Task.objects.get(project=project, clip=clip)
    ids = {project.pk, project.taxonomy_version_id, clip.pk, task.pk}
    return [str(i) for i in sorted(ids)]


@pytest.mark.parametrize(("method", "path"), _routes())
def test_junk_never_gets_a_500(
    clients: list[Client], real_ids: list[str], method: str, path: str
) -> None:
    params = re.findall(r"{(\w+)}", path)
    statuses = set()
    values = real_ids + JUNK_IDS if params else [""]
    for client, value in itertools.product(clients, values):
        url = re.sub(r"{\w+}", value, path)
        for body, query in itertools.product(BODIES if method != "GET" else [None], QUERIES):
            if body is None:
                response = getattr(client, method.lower())(url, query or None)
            else:
                qs = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
                response = getattr(client, method.lower())(
                    url + qs, body, content_type="application/json"
                )
            assert response.status_code < 500, (method, url, body, query, response.content[:300])
            statuses.add(response.status_code)
    assert statuses - {401, 404, 405}, f"{method} {path}: junk never got past routing {statuses}"
