"""Schemathesis against the API's own OpenAPI schema, in-process (WSGI), as a project admin with a
bearer token: every operation, schema-valid input on real ids and schema-invalid input, answers no
5xx and conforms to the schema it documents (status codes, content types, headers, bodies).

Bounded for ``make test``: a fixed number of examples per operation and mode, derandomized (the same
cases on every run, no example database), about a minute on a 2-core machine.
``REFRAIN_FUZZ_EXAMPLES=60,40`` (positive, negative) runs more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from refrain.api import api

pytestmark = pytest.mark.django_db

# Examples per operation and mode; REFRAIN_FUZZ_EXAMPLES="60,40" digs deeper (minutes, not for CI).
_POSITIVE, _NEGATIVE = (int(n) for n in os.environ.get("REFRAIN_FUZZ_EXAMPLES", "12,8").split(","))
# (caller, mode) -> examples per operation. The admin reaches every operation's code; an annotator
# (who holds a task) takes the refusals and the blind answers, with valid input only.
EXAMPLES = {
    ("admin", GenerationMode.POSITIVE): _POSITIVE,
    ("admin", GenerationMode.NEGATIVE): _NEGATIVE,
    ("annotator", GenerationMode.POSITIVE): max(1, _POSITIVE // 2),
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
SCHEMA = schemathesis.openapi.from_dict(api.get_openapi_schema())
OPERATIONS = sorted(op.ok().label for op in SCHEMA.get_all_operations())


@pytest.fixture
def wsgi_app(settings: Any, tmp_path: Path) -> Iterator[WSGIHandler]:
    """Django's WSGI handler on the test database: like the test client, requests must not close
    the connection that holds the test's transaction."""
    settings.ALLOWED_HOSTS = ["*"]
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(team, tmp_path: Path, settings: Any) -> dict[str, Any]:
    """Bearer tokens of the project's admin (staff too, so project creation runs) and of an
    annotator who holds the first clip's task, and real ids for every path parameter, so
    schema-valid cases reach the operations' own code."""
    from annotation.selectors import taxonomy_index_cached
    from annotation.services.annotations import annotation_create
    from annotation.services.enqueue import Manual, task_enqueue
    from annotation.services.tasks import task_next_for_annotator
    from annotation.services.tokens import api_token_create
    from quality.models import QualityCycle
    from tests.factories import ClipFactory, write_tone

    admin, project = team["admin"], team["project"]
    admin.is_staff = True
    admin.save()
    settings.MEDIA_ROOT = tmp_path / "media"
    media = Path(settings.MEDIA_ROOT) / "clips"
    clips = [
        ClipFactory(project=project, storage_key=str(write_tone(media / f"c{i}.wav")))
        for i in range(3)
    ]
    task_enqueue(project=project, sources=Manual.for_clips([c.pk for c in clips]))
    held = task_next_for_annotator(project_id=project.pk, user=team["ann"], exclude_task_ids=[])
    assert held is not None and held.task.clip_id == clips[0].pk
    index = taxonomy_index_cached(project.taxonomy_version)
    annotation, *_ = annotation_create(
        clip=clips[0],
        index=index,
        explicit_node_ids=[index.nodes[-1].id],
        source="user:ann",
        user=team["ann"],
    )
    cycle = QualityCycle.objects.create(project=project, trigger="manual")
    ids = {
        "project_id": project.pk,
        "version_id": project.taxonomy_version_id,
        "clip_id": clips[0].pk,
        "task_id": held.task_id,
        "annotation_id": annotation.pk,
        "cycle_id": cycle.pk,
    }
    tokens = {
        "admin": api_token_create(user=admin, name="schemathesis")[1],
        "annotator": api_token_create(user=team["ann"], name="schemathesis")[1],
    }
    headers = {who: {"Authorization": f"Bearer {token}"} for who, token in tokens.items()}
    return {"headers": headers, "ids": ids}


@pytest.mark.parametrize(("caller", "mode"), list(EXAMPLES), ids=lambda v: str(v))
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms_to_its_schema(
    wsgi_app: WSGIHandler, world: dict[str, Any], label: str, caller: str, mode: GenerationMode
) -> None:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None
    names = {p.name for p in operation.path_parameters}
    # A path parameter the fixture has no real id for is generated (add one to ``world``).
    known = names <= set(world["ids"])
    fixed = {n: world["ids"][n] for n in names if n in world["ids"]}
    fixed = fixed if mode == GenerationMode.POSITIVE else None
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

    @settings(
        max_examples=EXAMPLES[caller, mode],
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        headers = world["headers"][caller]
        response = case.call_and_validate(app=wsgi_app, headers=headers, checks=CHECKS)
        statuses.add(response.status_code)

    statuses: set[int] = set()
    fuzz()
    # The token and the real ids work: schema-valid cases get past authentication and lookup.
    assert 401 not in statuses, (label, statuses)
    if mode == GenerationMode.POSITIVE and known:
        assert statuses - {404}, (label, statuses)
