"""Refrain as a Label Studio ML backend, through Django's test client on PostgreSQL: auth,
malformed bodies, setup, predictions with and without a model, the webhook, and the push after
a retrain (its Label Studio side is in ``test_ml_backend_live.py``)."""

from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from active_learning.integrations.labelstudio_ml.services import (
    ML_USER,
    UNTRAINED,
    ml_backend_password,
    ml_backend_url,
    newest_predictions,
)
from active_learning.integrations.labelstudio_ml.tasks import ls_push_model_predictions
from active_learning.models import JobStatus, ModelVersion
from active_learning.services.training import model_train_for_project
from annotation.integrations.labelstudio import tasks as ls_tasks
from annotation.integrations.labelstudio.convert import label_config_from_taxonomy
from annotation.models import LabelStudioLink, Task
from annotation.selectors import taxonomy_index_cached
from tests.active_learning.conftest import project_with_features
from tests.active_learning.integrations.labelstudio_ml.conftest import (
    PATHS,
    ModelMaker,
    basic,
    make_link,
)
from tests.factories import ClipFactory, ProjectFactory, make_taxonomy_version

pytestmark = pytest.mark.django_db

FAST = {"max_steps": 200, "min_steps": 100}


@pytest.fixture
def link() -> LabelStudioLink:
    return make_link(ProjectFactory(taxonomy_version=make_taxonomy_version(PATHS)))


def auth(link: LabelStudioLink) -> str:
    return basic(ML_USER, ml_backend_password(link=link))


def call(
    client: Client,
    link: LabelStudioLink,
    endpoint: str,
    body: Any = None,
    *,
    authorization: str | None = None,
    link_id: int | None = None,
) -> Any:
    url = f"/integrations/label-studio/{link_id or link.id}/ml/{endpoint}"
    headers = {"Authorization": auth(link) if authorization is None else authorization}
    if body is None:
        return client.get(url, headers=headers)
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", headers=headers)


def ls_task(task_id: int, clip_id: Any) -> dict[str, Any]:
    return {"id": task_id, "project": 7, "data": {"audio": "x", "refrain_clip_id": clip_id}}


# --- authentication -------------------------------------------------------------------------------


def test_the_url_label_studio_is_given_leads_to_the_endpoints(link: LabelStudioLink) -> None:
    assert (
        ml_backend_url(link=link)
        == f"http://refrain.example/integrations/label-studio/{link.id}/ml"
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        basic(ML_USER, "wrong"),
        basic("someone", "x"),
        "Basic " + "bm8tY29sb24=",  # "no-colon"
    ],
)
def test_every_endpoint_refuses_missing_or_wrong_credentials(
    client: Client, link: LabelStudioLink, authorization: str
) -> None:
    for endpoint, body in (
        ("health", None),
        ("setup", {"project": "7.1"}),
        ("predict", {"tasks": []}),
        ("webhook", {"action": "START_TRAINING"}),
        ("train", {}),
    ):
        response = call(client, link, endpoint, body, authorization=authorization)
        assert response.status_code == 401, (endpoint, response.content)
        assert response["WWW-Authenticate"].startswith("Basic")
        assert "credentials" in response.json()["error"]


def test_an_unknown_link_answers_like_a_wrong_password(
    client: Client, link: LabelStudioLink
) -> None:
    response = call(client, link, "health", link_id=link.id + 1000)
    assert response.status_code == 401
    assert response.json() == {"error": "unknown link or wrong credentials"}


def test_another_links_password_is_refused(client: Client, link: LabelStudioLink) -> None:
    other = make_link(link.project, ls_project_id=8, webhook_secret="other")
    assert call(client, link, "health", authorization=auth(other)).status_code == 401
    assert call(client, other, "health").status_code == 200


def test_the_password_changes_with_the_webhook_secret(link: LabelStudioLink) -> None:
    before = ml_backend_password(link=link)
    link.webhook_secret = "rotated"
    assert ml_backend_password(link=link) != before


# --- health and setup -----------------------------------------------------------------------------


def test_health_is_up_and_names_the_model_version(
    client: Client, link: LabelStudioLink, make_model: ModelMaker
) -> None:
    response = call(client, link, "health")
    assert response.status_code == 200
    assert response.json() == {"status": "UP", "model_class": "Refrain", "model_version": UNTRAINED}
    clip = ClipFactory(project=link.project)
    make_model(link.project, {clip.id: "Jazz/Bebop"}, number=3)
    assert call(client, link, "health").json()["model_version"] == "refrain-3"


def test_setup_answers_the_model_version_for_the_links_config(
    client: Client, link: LabelStudioLink
) -> None:
    schema = label_config_from_taxonomy(taxonomy_index_cached(link.project.taxonomy_version).nodes)
    body = {"project": "7.1733580000", "schema": schema, "extra_params": None, "hostname": "h"}
    response = call(client, link, "setup", body)
    assert response.status_code == 200, response.content
    assert response.json() == {"model_version": UNTRAINED}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ("{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        ({"project": "8.123", "schema": "<View/>"}, 400, "serves Label Studio project 7, not 8"),
        ({"project": "abc", "schema": "<View/>"}, 400, "not a Label Studio project id"),
        ({"project": "7.1"}, 422, "'schema'"),
        ({"project": "7.1", "schema": "<View"}, 422, "not XML"),
        (
            {"project": "7.1", "schema": '<View><Choices name="x" toName="y"/></View>'},
            422,
            '<Taxonomy name="genre"',
        ),
    ],
)
def test_setup_bad_requests_are_json_4xx(
    client: Client, link: LabelStudioLink, body: Any, status: int, says: str
) -> None:
    response = call(client, link, "setup", body)
    assert response.status_code == status, response.content
    assert says in response.json()["error"]


def test_wrong_methods_are_405(client: Client, link: LabelStudioLink) -> None:
    assert call(client, link, "setup").status_code == 405  # a GET
    assert call(client, link, "health", {}).status_code == 405  # a POST


# --- predict --------------------------------------------------------------------------------------


def test_predict_without_a_model_answers_one_empty_entry_per_task(
    client: Client, link: LabelStudioLink
) -> None:
    clips = ClipFactory.create_batch(2, project=link.project)
    body = {"tasks": [ls_task(1, clips[0].id), ls_task(2, clips[1].id)], "project": "7.1"}
    response = call(client, link, "predict", body)
    assert response.status_code == 200, response.content
    # Label Studio pairs results with tasks by position and stores nothing for an empty list.
    assert response.json() == {"results": [[], []]}


def test_predict_with_a_model_gives_full_paths_and_refrains_order(
    client: Client, link: LabelStudioLink, make_model: ModelMaker
) -> None:
    sure, unsure, queued = ClipFactory.create_batch(3, project=link.project)
    foreign = ClipFactory()  # another project's clip
    make_model(
        link.project,
        {sure.id: "Jazz/Bebop", unsure.id: "Rock/Punk", queued.id: "Electronic/House"},
        number=2,
        sure={sure.id: 0.97, unsure.id: 0.55, queued.id: 0.96},
    )
    # A clip waiting in Refrain's queue (an acquisition pick) comes before any uncertainty.
    Task.objects.create(project=link.project, clip=queued, kind=Task.Kind.LABEL, priority=0.8)
    tasks = [
        ls_task(11, sure.id),
        ls_task(12, unsure.id),
        ls_task(13, queued.id),
        ls_task(14, foreign.id),
        ls_task(15, "not-an-id"),
        {"id": 16, "data": {"audio": "x"}},  # not a task Refrain pushed
    ]
    response = call(client, link, "predict", {"tasks": tasks, "project": "7.1"})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == len(tasks)
    assert results[3:] == [[], [], []]
    by_clip = dict(zip((sure.id, unsure.id, queued.id), results[:3], strict=True))
    for clip_id, want in ((sure.id, ["Jazz", "Jazz/Bebop"]), (unsure.id, ["Rock", "Rock/Punk"])):
        pred = by_clip[clip_id]
        assert pred["model_version"] == "refrain-2"
        (item,) = pred["result"]
        assert item["from_name"] == "genre" and item["to_name"] == "audio"
        assert item["type"] == "taxonomy"
        assert item["value"] == {"taxonomy": [want]}  # the full path, root first
    # Label Studio serves the lowest score first: the queued clip, then the uncertain one.
    scores = {c: by_clip[c]["score"] for c in by_clip}
    assert scores[queued.id] < scores[unsure.id] < scores[sure.id]
    assert scores[sure.id] == 1.0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"project": "7.1"}, "'tasks' must be a list"),
        ({"tasks": "1,2"}, "'tasks' must be a list"),
        ({"tasks": [1, 2]}, "'tasks' must be a list"),
        ({"tasks": [], "project": "9.1"}, "not 9"),
        ("nope", "not JSON"),
    ],
)
def test_predict_bad_requests_are_400(
    client: Client, link: LabelStudioLink, body: Any, says: str
) -> None:
    response = call(client, link, "predict", body)
    assert response.status_code == 400, response.content
    assert says in response.json()["error"]


def test_predict_refuses_a_model_of_another_taxonomy_version(
    client: Client, link: LabelStudioLink, make_model: ModelMaker
) -> None:
    clip = ClipFactory(project=link.project)
    make_model(link.project, {clip.id: "Jazz/Bebop"})
    link.project.taxonomy_version = make_taxonomy_version(PATHS, number=2)
    link.project.save(update_fields=["taxonomy_version"])
    response = call(client, link, "predict", {"tasks": [ls_task(1, clip.id)]})
    assert response.status_code == 409
    assert "retrain" in response.json()["error"]
    assert call(client, link, "health").json()["model_version"] == UNTRAINED


def test_scores_follow_refrains_order_over_all_clips(
    link: LabelStudioLink, make_model: ModelMaker
) -> None:
    clips = ClipFactory.create_batch(6, project=link.project)
    confidence = [0.99, 0.5, 0.9, 0.6, 0.95, 0.7]
    make_model(
        link.project,
        {c.id: "Rock/Metal" for c in clips},
        sure={c.id: p for c, p in zip(clips, confidence, strict=True)},
    )
    Task.objects.create(project=link.project, clip=clips[0], kind=Task.Kind.RELABEL, priority=1.5)
    Task.objects.create(project=link.project, clip=clips[4], kind=Task.Kind.LABEL, priority=0.6)
    newest = newest_predictions(project=link.project)
    assert newest is not None
    order = sorted(clips, key=lambda c: newest.scores[newest.row_of[c.id]])
    # routed issue (1.5), acquisition pick (0.6), then least confident first
    assert [c.id for c in order] == [clips[i].id for i in (0, 4, 1, 3, 5, 2)]
    assert np.allclose(sorted(newest.scores), np.arange(1, 7) / 6, atol=1e-6)


# --- webhook --------------------------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The broker boundary: what would be published, instead of publishing it."""
    from active_learning import tasks as al_tasks

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for task in (al_tasks.train_project_model, ls_tasks.ls_ingest_annotation):

        def publish(args: tuple[Any, ...], *, _name: str = task.name, **options: Any) -> None:
            assert options["retry"] is False  # one attempt: fail fast when the broker is down
            calls.append((_name, args, options.get("kwargs") or {}))

        monkeypatch.setattr(task, "apply_async", publish)
    return calls


def test_start_training_enqueues_a_retrain_and_answers_at_once(
    client: Client, link: LabelStudioLink, published: list[Any]
) -> None:
    body = {"action": "START_TRAINING", "project": {"id": 7, "title": "x"}}
    started = time.perf_counter()
    response = call(client, link, "webhook", body)
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 201, response.content
    assert response.json() == {"status": "queued"}
    ((name, args, kwargs),) = published
    assert name == "active_learning.tasks.train_project_model"
    assert args == (link.project_id,)
    assert kwargs == {"trigger": "manual"}
    assert not ModelVersion.objects.exists()  # the worker creates the version, not the request
    # The older protocol's /train does the same.
    assert call(client, link, "train", {"project": "7.1"}).status_code == 201


def test_start_training_while_a_version_trains_queues_nothing(
    client: Client, link: LabelStudioLink, published: list[Any]
) -> None:
    ModelVersion.objects.create(
        project=link.project,
        number=4,
        taxonomy_version=link.project.taxonomy_version,
        status=JobStatus.RUNNING,
    )
    response = call(client, link, "webhook", {"action": "START_TRAINING"})
    assert response.json() == {"status": "already training", "model_version": 4}
    assert published == []


def test_start_training_for_another_project_is_refused(
    client: Client, link: LabelStudioLink, published: list[Any]
) -> None:
    response = call(client, link, "webhook", {"action": "START_TRAINING", "project": {"id": 99}})
    assert response.status_code == 400
    assert published == []


def test_annotation_events_enqueue_an_ingest_and_others_are_acknowledged(
    client: Client, link: LabelStudioLink, published: list[Any]
) -> None:
    clip = ClipFactory(project=link.project)
    event = {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 31, "result": [], "completed_by": 1},
        "task": {"id": 9, "data": {"refrain_clip_id": clip.id}},
        "project": {"id": 7},
    }
    assert call(client, link, "webhook", event).json() == {"queued": True}
    ((name, args, _),) = published
    assert name == ls_tasks.ls_ingest_annotation.name
    assert args[0] == link.id and args[1]["annotation"]["id"] == 31
    for action in ("ANNOTATIONS_DELETED", "PROJECT_UPDATED", "TASKS_CREATED"):
        assert call(client, link, "webhook", {"action": action}).json() == {"ignored": action}
    assert len(published) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "'action' is missing"),
        ({"action": 3}, "'action' is missing"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}, "integer 'id'"),
        ({"action": "ANNOTATION_UPDATED", "annotation": {"id": 1}, "task": {}}, "'data' object"),
        ("[]", "JSON object"),
    ],
)
def test_webhook_bad_payloads_are_400(
    client: Client, link: LabelStudioLink, published: list[Any], body: Any, says: str
) -> None:
    response = call(client, link, "webhook", body)
    assert response.status_code == 400, response.content
    assert says in response.json()["error"]
    assert published == []


@pytest.mark.django_db(transaction=True)  # no test transaction: the publish runs in the request
def test_start_training_answers_503_at_once_when_the_broker_is_down(
    client: Client, link: LabelStudioLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real publish to a broker address nobody listens on, as a stopped broker looks."""
    from refrain.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None)  # a pool for the dead address, dropped afterwards
    call(client, link, "health")  # the first request of a process loads URLs, middleware
    started = time.perf_counter()
    response = call(client, link, "webhook", {"action": "START_TRAINING"})
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 503, response.content
    assert "start the training later" in response.json()["error"]


# --- push after a retrain -------------------------------------------------------------------------


def test_a_finished_training_queues_a_push_per_link(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """A real (small) training: its ``model_version_done`` event queues one push per link."""
    project, _, _ = project_with_features(artifacts, n_per_leaf=4, n_unlabelled=2)
    first = make_link(project)
    second = make_link(project, ls_project_id=8, webhook_secret="other")
    make_link(ProjectFactory(), ls_project_id=9)  # another project's link: not pushed
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ls_push_model_predictions, "delay", lambda *a: sent.append(a))
    with django_capture_on_commit_callbacks(execute=True):
        mv = model_train_for_project(project=project, n_folds=2, hyperparameters=FAST)
    assert mv.status == JobStatus.DONE, mv.error
    assert sorted(sent) == [(first.id, mv.id), (second.id, mv.id)]


def test_push_task_without_a_model_reports_and_calls_nothing(link: LabelStudioLink) -> None:
    # No model: nothing to push, and Label Studio (an unreachable address here) is never called.
    assert ls_push_model_predictions.run(link.id) == {"skipped": "no trained model"}


# --- the command ----------------------------------------------------------------------------------


def run_command(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("labelstudio", *args, stdout=out)
    return dict(json.loads(out.getvalue()))


def test_ml_backend_command_prints_what_label_studio_needs(link: LabelStudioLink) -> None:
    out = run_command("ml-backend", str(link.id))
    assert out == {
        "url": ml_backend_url(link=link),
        "auth_method": "BASIC_AUTH",
        "user": ML_USER,
        "password": ml_backend_password(link=link),
    }


def test_commands_name_what_is_missing(link: LabelStudioLink, make_model: ModelMaker) -> None:
    with pytest.raises(CommandError, match="no trained model yet"):
        run_command("push-predictions", str(link.id))
    with pytest.raises(CommandError, match="no Label Studio link"):
        run_command("push-predictions", str(link.id + 1000))
    make_model(link.project, {ClipFactory(project=link.project).id: "Rock/Punk"})
    with pytest.raises(CommandError, match="has no model v7"):
        run_command("push-predictions", str(link.id), "--model-version", "7")
    no_url = make_link(link.project, ls_project_id=8, refrain_url="")
    with pytest.raises(CommandError, match="cannot reach Refrain"):
        run_command("ml-backend", str(no_url.id), "--connect")
