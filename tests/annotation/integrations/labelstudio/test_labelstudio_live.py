"""Round trips against a real Label Studio (``scripts/labelstudio_service.sh start``)."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from annotation.integrations.labelstudio.services import (
    WEBHOOK_HEADER,
    ls_client,
    ls_project_link,
    ls_pull_annotations,
    ls_push_predictions,
    ls_push_tasks,
    ls_request_second_opinion,
)
from annotation.models import Annotation, LabelStudioLink, LabelStudioTask
from tests.factories import ClipFactory, ProjectFactory, make_taxonomy_version

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db]

PATHS = ("Rock/Punk", "Rock/Rock & Roll", "Jazz/Bebop", 'Jazz/"Free" <Jazz>', "Electronic/House")


@pytest.fixture
def linked(ls_server: tuple[str, str]) -> Iterator[LabelStudioLink]:
    url, token = ls_server
    project = ProjectFactory(
        name=f"Refrain LS test {uuid.uuid4().hex[:8]}",
        taxonomy_version=make_taxonomy_version(PATHS),
        overlap=1,
    )
    link = ls_project_link(
        project=project, base_url=url, api_key=token, refrain_url="http://127.0.0.1:9"
    )
    yield link
    ls_client(base_url=url, api_key=token).projects.delete(id=link.ls_project_id)


def ls_result(paths: list[list[str]]) -> list[dict[str, Any]]:
    return [
        {"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": {"taxonomy": paths}}
    ]


def test_round_trip(linked: LabelStudioLink, ls_server: tuple[str, str]) -> None:
    url, token = ls_server
    client = ls_client(base_url=url, api_key=token)
    timings: dict[str, float] = {}

    # The project LS created holds our config, which LS validated on creation.
    remote = client.projects.get(id=linked.ls_project_id)
    choices = ET.fromstring(remote.label_config).findall(".//Choice")
    assert {c.get("alias") for c in choices} >= set(PATHS)
    assert linked.ls_webhook_id is not None

    clips = [ClipFactory(project=linked.project) for _ in range(3)]
    t = time.perf_counter()
    pushed = ls_push_tasks(link=linked, clips=clips)
    timings["push 3 tasks"] = time.perf_counter() - t
    assert (pushed.created, pushed.already) == (3, 0)
    again = ls_push_tasks(link=linked, clips=clips)
    assert (again.created, again.already) == (0, 3)
    task_of = dict(LabelStudioTask.objects.filter(link=linked).values_list("clip_id", "ls_task_id"))
    remote_tasks = {t.id: t for t in client.tasks.list(project=linked.ls_project_id)}
    assert len(remote_tasks) == 3
    for clip in clips:
        data = remote_tasks[task_of[clip.id]].data
        assert data["refrain_clip_id"] == clip.id
        assert data["audio"].startswith("http://127.0.0.1:9/integrations/label-studio/audio/")

    # Predictions: K = 2 roots + 5 leaves, in index order of make_taxonomy_version.
    keys = [n.key for n in linked.project.taxonomy_version.nodes.order_by("index")]
    probs = {}
    for clip in clips:
        p = np.full(len(keys), 0.05)
        p[keys.index("Jazz")], p[keys.index("Jazz/Bebop")] = 0.9, 0.7
        probs[clip.id] = p
    t = time.perf_counter()
    preds = ls_push_predictions(link=linked, model_version_id=42, probs_by_clip=probs)
    timings["push 3 predictions"] = time.perf_counter() - t
    assert preds.created == 3 and preds.model_version == "refrain-42"
    assert client.projects.get(id=linked.ls_project_id).model_version == "refrain-42"
    task = client.tasks.get(str(task_of[clips[0].id]))
    assert task.total_predictions == 1

    # Two annotators' results in LS: one valid, one naming a genre the version lacks.
    ann = client.annotations.create(
        id=task_of[clips[0].id],
        result=ls_result([["Rock", "Rock/Punk"], ["Jazz", "Jazz/Bebop"]]),
        lead_time=4.0,
    )
    client.annotations.create(id=task_of[clips[1].id], result=ls_result([["Polka"]]))
    t = time.perf_counter()
    first = ls_pull_annotations(link=linked)
    timings["pull"] = time.perf_counter() - t
    assert first.created == 1
    assert len(first.errors) == 1 and "'Polka'" in first.errors[0]
    stored = Annotation.objects.get(clip=clips[0])
    assert stored.source.startswith("labelstudio:")
    assert "@" in stored.source
    explicit = {lab.node.key for lab in stored.labels.select_related("node") if lab.explicit}
    assert explicit == {"Rock/Punk", "Jazz/Bebop"}

    second = ls_pull_annotations(link=linked)
    assert second.created == 0 and second.existing == 1
    assert Annotation.objects.filter(clip__project=linked.project).count() == 1

    # An edit in LS supersedes; it never overwrites.
    client.annotations.update(id=ann.id, result=ls_result([["Electronic", "Electronic/House"]]))
    third = ls_pull_annotations(link=linked)
    assert third.created == 1
    latest = Annotation.objects.filter(clip=clips[0]).latest("id")
    assert latest.supersedes_id == stored.id

    t = time.perf_counter()
    asked = ls_request_second_opinion(link=linked, clip=clips[0])
    timings["second opinion"] = time.perf_counter() - t
    # One Label Studio annotator so far (an edit is the same annotation): one more is asked.
    assert (asked.annotators, asked.overlap) == (1, 2)
    reopened = client.tasks.get(str(task_of[clips[0].id]))
    assert reopened.overlap == 2 and reopened.is_labeled is False
    print("timings (s):", {k: round(v, 3) for k, v in timings.items()})


def _purge_default_queue() -> None:
    from refrain.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")


def _messages_for(
    task_name: str, *, link_id: int, ls_annotation_id: int, timeout: float, want: int = 1
) -> list[dict[str, Any]]:
    """Payloads of ``task_name`` messages for one link and LS annotation, taken off the broker's
    default queue (the broker boundary) until ``want`` are found or ``timeout`` passes."""
    from refrain.celery import app

    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("default")
        try:
            while time.monotonic() < deadline and len(found) < want:
                try:
                    msg = queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                msg.ack()
                args = msg.payload[0]
                if (
                    msg.headers.get("task") == task_name
                    and args[0] == link_id
                    and args[1]["annotation"]["id"] == ls_annotation_id
                ):
                    found.append(args[1])
        finally:
            queue.close()
    return found


@pytest.mark.django_db(transaction=True)
def test_webhook_round_trip(ls_server: tuple[str, str], live_server: Any, settings: Any) -> None:
    """LS calls Refrain's webhook on a new annotation; the view queues it; the task stores it.

    The test reads the message off the broker itself, so run it on a broker database that no
    worker consumes (a worker on the same database takes the message first).
    """
    from annotation.integrations.labelstudio.tasks import ls_ingest_annotation

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("needs a real broker (CELERY_BROKER_URL=redis://...)")
    url, token = ls_server
    client = ls_client(base_url=url, api_key=token)
    project = ProjectFactory(
        name=f"Refrain LS hook {uuid.uuid4().hex[:8]}",
        taxonomy_version=make_taxonomy_version(PATHS),
    )
    link = ls_project_link(
        project=project, base_url=url, api_key=token, refrain_url=live_server.url
    )
    try:
        clip = ClipFactory(project=project)
        ls_push_tasks(link=link, clips=[clip])
        task_id = LabelStudioTask.objects.get(link=link, clip=clip).ls_task_id
        _purge_default_queue()  # messages of earlier runs may name the same ids
        t = time.perf_counter()
        ann = client.annotations.create(id=task_id, result=ls_result([["Jazz", "Jazz/Bebop"]]))
        created_s = time.perf_counter() - t
        (payload,) = _messages_for(
            ls_ingest_annotation.name, link_id=link.id, ls_annotation_id=ann.id, timeout=20
        )
        assert payload["task"]["data"]["refrain_clip_id"] == clip.id
        out = ls_ingest_annotation.run(link.id, payload)
        assert out["status"] == "created"
        assert Annotation.objects.get(clip=clip).source.startswith("labelstudio:")
        # A pull afterwards finds the webhook's annotation and stores nothing more.
        assert ls_pull_annotations(link=link).created == 0
        # What LS waits for: Refrain's answer to the webhook, timed over HTTP.
        hook = f"{live_server.url}/integrations/label-studio/{link.id}/webhook"
        body = {"action": "ANNOTATION_UPDATED", "annotation": {"id": 1}, "task": payload["task"]}
        answers = []
        for _ in range(5):
            t = time.perf_counter()
            r = httpx.post(hook, json=body, headers={WEBHOOK_HEADER: link.webhook_secret})
            answers.append(time.perf_counter() - t)
            assert r.status_code == 200
        queued = _messages_for(
            ls_ingest_annotation.name, link_id=link.id, ls_annotation_id=1, timeout=10, want=5
        )
        assert len(queued) == 5
        assert sorted(answers)[2] < 1.0
        print(
            f"LS annotation POST incl. its webhook call to Refrain: {created_s:.3f} s; "
            f"Refrain webhook answer median {sorted(answers)[2] * 1000:.0f} ms, "
            f"max {max(answers) * 1000:.0f} ms"
        )
    finally:
        client.projects.delete(id=link.ls_project_id)


def test_management_command(ls_server: tuple[str, str]) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    url, token = ls_server
    project = ProjectFactory(name=f"Refrain LS cmd {uuid.uuid4().hex[:8]}")
    ClipFactory.create_batch(2, project=project)

    def run(*args: str) -> dict[str, Any]:
        out = StringIO()
        call_command("labelstudio", *args, stdout=out)
        return json.loads(out.getvalue())

    linked = run("link", project.slug, "--url", url, "--token", token)
    try:
        pushed = run("push", str(linked["link"]))
        assert pushed == {"created": 2, "already": 0, "reconciled": 0, "skipped": []}
        assert run("pull", str(linked["link"]))["created"] == 0
    finally:
        ls_client(base_url=url, api_key=token).projects.delete(id=linked["ls_project"])
