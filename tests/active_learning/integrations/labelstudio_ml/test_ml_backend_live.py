"""Refrain as Label Studio's ML backend, against a real Label Studio 1.23 and a live Refrain
(pytest-django's ``live_server``): the connection validates, Label Studio's ``predict`` stores
Refrain's pre-annotations, START_TRAINING reaches Refrain's queue, a retrain's predictions are
pushed once per model version, and the config follows a new taxonomy version (or refuses one that
no longer matches, losing nothing). Counts are taken on both sides."""

from __future__ import annotations

import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from active_learning.events import model_version_done
from active_learning.integrations.labelstudio_ml.services import (
    ml_backend_connect,
    ml_backend_url,
)
from annotation import events
from annotation.integrations.labelstudio.services import (
    LabelStudioConfigMismatch,
    ls_client,
    ls_config_update,
    ls_project_link,
    ls_push_tasks,
)
from annotation.models import Annotation, LabelStudioLink, LabelStudioTask
from annotation.services.projects import project_update_policy
from tests.active_learning.integrations.labelstudio_ml.conftest import PATHS, ModelMaker
from tests.factories import ClipFactory, ProjectFactory, make_taxonomy_version

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def eager() -> Iterator[None]:
    """Tasks run where they are sent (the broker boundary; the worker path is the same code)."""
    from refrain.celery import app

    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def _linked(ls_server: tuple[str, str], refrain_url: str, paths: tuple[str, ...] = PATHS) -> Any:
    url, token = ls_server
    name = f"Refrain LS ml {uuid.uuid4().hex[:8]}"
    project = ProjectFactory(
        name=name, taxonomy_version=make_taxonomy_version(paths, name=name), overlap=1
    )
    return ls_project_link(project=project, base_url=url, api_key=token, refrain_url=refrain_url)


@pytest.fixture
def served(ls_server: tuple[str, str], live_server: Any) -> Iterator[LabelStudioLink]:
    link = _linked(ls_server, live_server.url)
    yield link
    ls_client(base_url=ls_server[0], api_key=ls_server[1]).projects.delete(id=link.ls_project_id)


def command(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("labelstudio", *args, stdout=out)
    return dict(json.loads(out.getvalue()))


def ls_result(paths: list[list[str]]) -> list[dict[str, Any]]:
    return [
        {"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": {"taxonomy": paths}}
    ]


def _gpu_messages(task_name: str, *, project_id: int, timeout: float) -> list[Any]:
    """``task_name`` messages for the project taken off the broker's ``gpu`` queue (no worker
    consumes this test broker database)."""
    from refrain.celery import app

    found: list[Any] = []
    deadline = time.monotonic() + timeout
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("gpu")
        try:
            while time.monotonic() < deadline and not found:
                try:
                    msg = queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                msg.ack()
                if msg.headers.get("task") == task_name and msg.payload[0][0] == project_id:
                    found.append(msg.payload)
        finally:
            queue.close()
    return found


def test_label_studio_connects_predicts_and_trains_through_refrain(
    served: LabelStudioLink,
    ls_server: tuple[str, str],
    make_model: ModelMaker,
    settings: Any,
    eager: None,
) -> None:
    link = served
    client = ls_client(base_url=ls_server[0], api_key=ls_server[1])
    pid = link.ls_project_id
    clips = ClipFactory.create_batch(4, project=link.project)
    assert ls_push_tasks(link=link, clips=clips).created == 4
    task_of = dict(LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id"))
    truth = dict(
        zip(
            [c.id for c in clips],
            ["Jazz/Bebop", "Rock/Punk", "Rock/Metal", "Electronic/House"],
            strict=True,
        )
    )
    make_model(link.project, truth, number=1, sure={clips[1].id: 0.55})

    # The connection: Label Studio calls /health and /setup with the basic auth before accepting.
    t = time.perf_counter()
    connected = ml_backend_connect(link=link)
    connect_s = time.perf_counter() - t
    assert connected["url"] == ml_backend_url(link=link)
    assert connected["model_version"] == "refrain-1"
    assert connected["project_model_version_set"] is False  # no prediction of it in LS yet
    backend = client.ml.get(id=connected["ml_backend"])
    assert backend.state == "CO", backend.error_message  # connected
    assert backend.model_version == "refrain-1"

    # Label Studio asks Refrain for predictions (Data Manager, "Retrieve predictions") and stores them.
    t = time.perf_counter()
    client.actions.create(
        id="retrieve_tasks_predictions", project=pid, selected_items={"all": True, "excluded": []}
    )
    predict_s = time.perf_counter() - t
    stored = client.predictions.list(project=pid)
    assert len(stored) == 4
    for pred in stored:
        clip_id = next(c for c, t_id in task_of.items() if t_id == pred.task)
        keys = truth[clip_id].split("/")
        want = ["/".join(keys[: i + 1]) for i in range(len(keys))]
        assert pred.model_version == "refrain-1"
        assert pred.result[0]["value"] == {"taxonomy": [want]}
    # The least certain clip is the one Label Studio serves first (lowest score).
    first = min(stored, key=lambda p: p.score)
    assert first.task == task_of[clips[1].id]
    # Connecting again updates that connection (never a second one) and, now that Label Studio
    # holds refrain-1's predictions, makes it the project's model version (what it sorts by).
    again = ml_backend_connect(link=link)
    assert again["ml_backend"] == connected["ml_backend"]
    assert again["project_model_version_set"] is True
    assert len(client.ml.list(project=pid)) == 1
    assert client.projects.get(id=pid).model_version == "refrain-1"
    # Asking again stores nothing more: every task holds this model version's prediction.
    client.actions.create(
        id="retrieve_tasks_predictions", project=pid, selected_items={"all": True, "excluded": []}
    )
    assert len(client.predictions.list(project=pid)) == 4

    # A retrain finishes: its predictions are pushed (the receiver, then the push task), once.
    model_2 = make_model(link.project, truth, number=2)
    t = time.perf_counter()
    events.publish(model_version_done, model_version_id=model_2.id, project_id=link.project_id)
    push_s = time.perf_counter() - t
    stored = client.predictions.list(project=pid)
    assert sum(p.model_version == "refrain-2" for p in stored) == 4
    assert len(stored) == 8
    assert client.projects.get(id=pid).model_version == "refrain-2"
    events.publish(model_version_done, model_version_id=model_2.id, project_id=link.project_id)
    assert len(client.predictions.list(project=pid)) == 8  # nothing twice
    # By hand, as after a failed automatic push: nothing twice either.
    assert command("push-predictions", str(link.id)) == {
        "model_version": "refrain-2",
        "created": 0,
        "already": 4,
        "not_pushed": 0,
    }
    # An older version pushed by name becomes the project's model version again (a rollback).
    assert command("push-predictions", str(link.id), "--model-version", "1")["already"] == 4
    assert client.projects.get(id=pid).model_version == "refrain-1"
    assert command("push-predictions", str(link.id))["created"] == 0
    assert len(client.predictions.list(project=pid)) == 8
    assert client.projects.get(id=pid).model_version == "refrain-2"
    link.refresh_from_db()
    assert link.model_version == "refrain-2"

    # Label Studio's "Start training" reaches Refrain's training queue through /webhook.
    from refrain.celery import app

    app.conf.task_always_eager = False  # a real publish to the broker this time
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("gpu")
    client.ml.train(id=connected["ml_backend"])
    (message,) = _gpu_messages(
        "active_learning.tasks.train_project_model", project_id=link.project_id, timeout=20
    )
    assert message[1] == {"trigger": "manual"}
    print(
        f"connect (LS validates health+setup) {connect_s:.2f} s, LS predict of 4 tasks "
        f"{predict_s:.2f} s, push after retrain {push_s:.2f} s"
    )


def test_config_follows_a_new_taxonomy_version_or_refuses_losing_nothing(
    ls_server: tuple[str, str], eager: None
) -> None:
    url, token = ls_server
    link = _linked(ls_server, "http://127.0.0.1:9")
    client = ls_client(base_url=url, api_key=token)
    pid = link.ls_project_id
    try:
        project = link.project
        name = project.taxonomy_version.taxonomy.name
        clips = ClipFactory.create_batch(2, project=project)
        ls_push_tasks(link=link, clips=clips)
        task_id = LabelStudioTask.objects.get(link=link, clip=clips[0]).ls_task_id
        client.annotations.create(id=task_id, result=ls_result([["Jazz", "Jazz/Bebop"]]))

        def remote_aliases() -> set[str | None]:
            config = client.projects.get(id=pid).label_config
            return {c.get("alias") for c in ET.fromstring(config).iter("Choice")}

        # A version without Bebop, which Label Studio's annotation names: refused, nothing changes.
        v1 = project.taxonomy_version
        no_bebop = (*(p for p in PATHS if p != "Jazz/Bebop"), "Jazz/Cool")
        v2 = make_taxonomy_version(no_bebop, name=name, number=2)
        project_update_policy(project=project, taxonomy_version=v2)  # the receiver's task runs
        link.refresh_from_db()
        assert link.taxonomy_version_id == v1.id
        assert "Jazz/Bebop" in remote_aliases() and "Jazz/Cool" not in remote_aliases()
        with pytest.raises(LabelStudioConfigMismatch) as refused:
            ls_config_update(link=LabelStudioLink.objects.get(id=link.id))
        message = str(refused.value)
        assert f"LS task {task_id} annotation" in message
        assert "Jazz > Jazz/Bebop" in message
        assert "nothing was lost" in message
        assert client.projects.get(id=pid).num_tasks_with_annotations == 1
        assert len(client.annotations.list(id=task_id)) == 1
        assert not Annotation.objects.filter(clip__project=project).exists()

        # A version that adds a genre: the config is updated and the diff reported.
        v3 = make_taxonomy_version((*PATHS, "Jazz/Cool"), name=name, number=3)
        project_update_policy(project=project, taxonomy_version=v3)
        link.refresh_from_db()
        assert link.taxonomy_version_id == v3.id
        assert {"Jazz/Cool", "Jazz/Bebop"} <= remote_aliases()
        again = ls_config_update(link=LabelStudioLink.objects.get(id=link.id))
        assert not again.changed
        # The diff, as the command reports it, from a link still on v1.
        LabelStudioLink.objects.filter(id=link.id).update(taxonomy_version=v1)
        update = ls_config_update(link=LabelStudioLink.objects.get(id=link.id))
        assert update.changed and update.diff["added"] == ["Jazz/Cool"]
        assert update.diff["removed"] == [] and "1 added" in update.summary()
        assert len(client.annotations.list(id=task_id)) == 1
    finally:
        client.projects.delete(id=pid)
