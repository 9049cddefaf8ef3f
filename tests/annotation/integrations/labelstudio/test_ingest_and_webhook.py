"""Mapping LS results to Refrain labels, idempotent ingest, and the webhook receiver (PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from annotation.integrations.labelstudio import tasks as ls_tasks
from annotation.integrations.labelstudio.services import (
    WEBHOOK_HEADER,
    clip_audio_url,
    ls_annotation_ingest,
)
from annotation.models import Annotation, LabelStudioLink, Membership
from annotation.selectors import TaxonomyIndex
from annotation.services.annotations import LabelError
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory, write_tone

pytestmark = pytest.mark.django_db


@pytest.fixture
def link() -> LabelStudioLink:
    project = ProjectFactory()
    return LabelStudioLink.objects.create(
        project=project,
        base_url="http://ls.example:8080",
        ls_project_id=5,
        api_key="token",
        webhook_secret="s3cret",
        refrain_url="http://refrain.example",
    )


def ls_annotation(ann_id: int, paths: list[list[str]], **extra: Any) -> dict[str, Any]:
    return {
        "id": ann_id,
        "result": [
            {
                "from_name": "genre",
                "to_name": "audio",
                "type": "taxonomy",
                "value": {"taxonomy": paths},
            }
        ],
        "completed_by": 1,
        "created_username": " ann@ls.example, 1",
        "lead_time": 2.5,
        **extra,
    }


def no_lookup(annotation: Any) -> str:
    return "ann@ls.example"


def ingest(link: LabelStudioLink, clip_id: int, annotation: dict[str, Any]) -> Any:
    return ls_annotation_ingest(
        link=link,
        annotation=annotation,
        task={"id": 1, "data": {"refrain_clip_id": clip_id}},
        index=TaxonomyIndex.for_version(link.project.taxonomy_version),
        email_for=no_lookup,
    )


def explicit_paths(ann: Annotation) -> set[str]:
    return {lab.node.path for lab in ann.labels.select_related("node") if lab.explicit}


def test_ingest_maps_alias_and_name_paths_and_is_idempotent(link: LabelStudioLink) -> None:
    clip = ClipFactory(project=link.project)
    first = ingest(link, clip.id, ls_annotation(11, [["Rock", "Rock/Punk"], ["Jazz", "Free Jazz"]]))
    assert first.status == "created"
    ann = Annotation.objects.get(id=first.annotation_id)
    assert ann.source == "labelstudio:ann@ls.example"
    assert ann.user is None and ann.time_spent_ms == 2500
    assert explicit_paths(ann) == {"Rock/Punk", "Jazz/Free Jazz"}
    # Ancestors are closed in, as for every Refrain annotation.
    assert {lab.node.path for lab in ann.labels.select_related("node")} >= {"Rock", "Jazz"}
    again = ingest(link, clip.id, ls_annotation(11, [["Rock", "Rock/Punk"], ["Jazz", "Free Jazz"]]))
    assert (again.status, again.annotation_id) == ("existing", first.annotation_id)
    assert Annotation.objects.filter(clip=clip).count() == 1


def test_an_edit_in_label_studio_supersedes_instead_of_overwriting(link: LabelStudioLink) -> None:
    clip = ClipFactory(project=link.project)
    first = ingest(link, clip.id, ls_annotation(12, [["Rock", "Rock/Punk"]]))
    edited = ingest(link, clip.id, ls_annotation(12, [["Rock", "Rock/Metal"]]))
    assert edited.status == "superseded"
    new = Annotation.objects.get(id=edited.annotation_id)
    assert new.supersedes_id == first.annotation_id
    assert explicit_paths(new) == {"Rock/Metal"}
    assert ingest(link, clip.id, ls_annotation(12, [["Rock", "Rock/Metal"]])).status == "existing"
    assert Annotation.objects.filter(clip=clip).count() == 2


def test_member_with_the_ls_email_owns_the_annotation(link: LabelStudioLink) -> None:
    user = UserFactory(username="ann-ls", email="Ann@LS.example")
    MembershipFactory(project=link.project, user=user, role=Membership.Role.ANNOTATOR)
    clip = ClipFactory(project=link.project)
    result = ingest(link, clip.id, ls_annotation(13, [["Electronic", "Electronic/House"]]))
    assert Annotation.objects.get(id=result.annotation_id).user == user


def test_nodes_outside_the_version_are_named(link: LabelStudioLink) -> None:
    clip = ClipFactory(project=link.project)
    with pytest.raises(LabelError, match=r"'Rock/Grunge'.*'Polka'"):
        ingest(link, clip.id, ls_annotation(14, [["Rock", "Grunge"], ["Polka"], ["Jazz"]]))
    assert not Annotation.objects.filter(clip=clip).exists()


def test_skipped_and_empty_annotations_store_nothing(link: LabelStudioLink) -> None:
    clip = ClipFactory(project=link.project)
    assert (
        ingest(link, clip.id, ls_annotation(15, [["Jazz"]], was_cancelled=True)).status == "skipped"
    )
    empty = ls_annotation(16, [])
    empty["result"] = []
    assert ingest(link, clip.id, empty).status == "skipped"
    assert not Annotation.objects.filter(clip=clip).exists()


def test_clip_of_another_project_is_refused(link: LabelStudioLink) -> None:
    other = ClipFactory()
    with pytest.raises(ValueError, match="not in project"):
        ingest(link, other.id, ls_annotation(17, [["Jazz"]]))


# --- webhook ----------------------------------------------------------------------------------------


def payload(clip_id: int, **overrides: Any) -> dict[str, Any]:
    body = {
        "action": "ANNOTATION_CREATED",
        "annotation": ls_annotation(21, [["Jazz", "Jazz/Bebop"]]),
        "task": {"id": 9, "data": {"audio": "http://x", "refrain_clip_id": clip_id}},
        "project": {"id": 5, "label_config": "<View/>" * 1000},
    }
    body.update(overrides)
    return body


@pytest.fixture
def post(client: Client, link: LabelStudioLink) -> Callable[..., Any]:
    def _post(body: Any, *, secret: str = "s3cret", link_id: int | None = None) -> Any:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return client.post(
            f"/integrations/label-studio/{link_id or link.id}/webhook",
            data=data,
            content_type="application/json",
            headers={WEBHOOK_HEADER: secret},
        )

    return _post


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    # The broker boundary: record what would be published instead of publishing it.
    calls: list[tuple[Any, ...]] = []

    def publish(args: tuple[Any, ...], **options: Any) -> None:
        assert options["retry"] is False  # one attempt: fail fast when the broker is down
        calls.append(args)

    monkeypatch.setattr(ls_tasks.ls_ingest_annotation, "apply_async", publish)
    return calls


def test_webhook_only_enqueues_after_commit(
    post: Callable[..., Any],
    link: LabelStudioLink,
    sent: list[tuple[Any, ...]],
    django_capture_on_commit_callbacks: Any,
    django_assert_max_num_queries: Any,
) -> None:
    clip = ClipFactory(project=link.project)
    post({"action": "PROJECT_UPDATED"})  # the first request of a process loads URLs, middleware
    started = time.perf_counter()
    with (
        django_assert_max_num_queries(1),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        response = post(payload(clip.id))
        assert sent == []  # nothing is published before the transaction commits
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content
    assert elapsed < 1.0
    assert len(callbacks) == 1
    ((link_id, body),) = sent
    assert link_id == link.id
    assert body["annotation"]["id"] == 21
    assert body["task"] == {"id": 9, "data": {"refrain_clip_id": clip.id}}
    assert "project" not in body  # LS's whole project does not travel through the broker
    assert not Annotation.objects.exists()  # nothing ingested in the request


@pytest.mark.django_db(transaction=True)  # no test transaction: the publish runs in the request
def test_webhook_answers_503_at_once_when_the_broker_is_down(
    post: Callable[..., Any], link: LabelStudioLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real publish to a broker address nobody listens on, as a stopped broker looks."""
    app = ls_tasks.ls_ingest_annotation.app
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None)  # a pool for the dead address, dropped afterwards
    clip = ClipFactory(project=link.project)
    post({"action": "PROJECT_UPDATED"})  # the first request of a process loads URLs, middleware
    started = time.perf_counter()
    response = post(payload(clip.id))
    elapsed = time.perf_counter() - started
    assert response.status_code == 503, response.content
    assert "next scheduled pull" in response.json()["error"]
    assert elapsed < 1.0  # Label Studio gives a webhook 1 s (Celery's own retries take ~6 s)
    assert not Annotation.objects.exists()


def test_webhook_ingest_task_stores_the_annotation(link: LabelStudioLink) -> None:
    clip = ClipFactory(project=link.project)
    body = payload(clip.id)
    out = ls_tasks.ls_ingest_annotation.run(link.id, body)
    assert out["status"] == "created"
    assert ls_tasks.ls_ingest_annotation.run(link.id, body)["status"] == "existing"
    bad = payload(clip.id, annotation=ls_annotation(22, [["Polka"]]))
    out = ls_tasks.ls_ingest_annotation.run(link.id, bad)
    assert out["status"] == "error" and "Polka" in out["reason"]


def test_webhook_refuses_a_wrong_secret_or_unknown_link(
    post: Callable[..., Any], link: LabelStudioLink, sent: list[tuple[Any, ...]]
) -> None:
    assert post(payload(1), secret="nope").status_code == 403
    assert post(payload(1), secret="").status_code == 403
    assert post(payload(1), link_id=link.id + 999).status_code == 403
    assert sent == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "JSON object"),
        ({"annotation": {}}, "'action' is missing"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}, "integer 'id'"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}, "'task'"),
        (
            {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "task": {"data": {}}},
            "refrain_clip_id",
        ),
        (
            {
                "action": "ANNOTATION_UPDATED",
                "annotation": {"id": 1, "result": "x"},
                "task": {"data": {"refrain_clip_id": 1}},
            },
            "must be a list",
        ),
    ],
)
def test_webhook_bad_payloads_are_400_with_a_message(
    post: Callable[..., Any], sent: list[tuple[Any, ...]], body: Any, message: str
) -> None:
    response = post(body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert sent == []


def test_webhook_acknowledges_other_events(
    post: Callable[..., Any], sent: list[tuple[Any, ...]]
) -> None:
    response = post({"action": "PROJECT_UPDATED", "project": {"id": 5}})
    assert response.status_code == 200 and response.json() == {"ignored": "PROJECT_UPDATED"}
    assert sent == []


def test_webhook_is_post_only(client: Client, link: LabelStudioLink) -> None:
    assert client.get(f"/integrations/label-studio/{link.id}/webhook").status_code == 405


def test_signed_audio_url(client: Client, link: LabelStudioLink, tmp_path: Any) -> None:
    wav = write_tone(tmp_path / "a.wav")
    clip = ClipFactory(project=link.project, storage_key=str(wav))
    url = clip_audio_url(link=link, clip=clip)
    assert url.startswith("http://refrain.example/integrations/label-studio/audio/")
    path = url.removeprefix("http://refrain.example")
    response = client.get(path)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "http://ls.example:8080"
    full = wav.read_bytes()
    assert b"".join(response.streaming_content) == full
    assert response["Accept-Ranges"] == "bytes"
    # Label Studio's waveform player seeks with byte ranges: 206 with the slice, 416 past the end.
    part = client.get(path, HTTP_RANGE="bytes=44-143")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 44-143/{len(full)}"
    assert b"".join(part.streaming_content) == full[44:144]
    assert part["Access-Control-Allow-Origin"] == "http://ls.example:8080"
    assert client.get(path, HTTP_RANGE=f"bytes={len(full)}-").status_code == 416
    assert client.get(path[:-2] + "xx").status_code == 404
    other = ClipFactory(project=link.project)
    forged = path.replace(f"{link.id}.{clip.id}", f"{link.id}.{other.id}")
    assert client.get(forged).status_code == 404


def test_audio_urls_are_absolute_from_the_public_url_setting(
    link: LabelStudioLink, settings: Any
) -> None:
    clip = ClipFactory(project=link.project)
    link.refrain_url = ""
    settings.REFRAIN_PUBLIC_URL = "https://refrain.example"
    assert clip_audio_url(link=link, clip=clip).startswith(
        "https://refrain.example/integrations/label-studio/audio/"
    )
    link.refrain_url = "http://internal:8000"  # the link's own address wins
    assert clip_audio_url(link=link, clip=clip).startswith("http://internal:8000/integrations/")
    link.refrain_url, settings.REFRAIN_PUBLIC_URL = "", ""
    assert clip_audio_url(link=link, clip=clip).startswith("/integrations/label-studio/audio/")


def test_command_names_a_missing_link() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no Label Studio link 999999"):
        call_command("labelstudio", "pull", "999999")
