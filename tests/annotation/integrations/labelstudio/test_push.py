"""Linking and pushing to Label Studio are idempotent: re-linking updates the link, never a second
project; a retry after a push failed part-way creates nothing twice.

A stand-in for Label Studio's project and task endpoints keeps the tasks it created, so the test can
count them; it fails one import either before creating anything (a refusal) or after (the answer
is lost, as on a timeout). The live round trip is in test_labelstudio_live.py.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from annotation.integrations.labelstudio import services
from annotation.integrations.labelstudio.services import LabelStudioSyncError, ls_push_tasks
from annotation.models import Annotation, Clip, LabelStudioLink, LabelStudioTask
from tests.factories import ClipFactory, ProjectFactory

pytestmark = pytest.mark.django_db


class FakeLabelStudio:
    """Label Studio's task store, with one import made to fail on request."""

    def __init__(self) -> None:
        self.tasks: list[SimpleNamespace] = []
        self.imports = 0
        self.fail_on: int | None = None
        self.lose_answer = False  # fail after creating the tasks (a lost response)
        self.projects = SimpleNamespace(get=self._get, import_tasks=self._import)
        self.tasks_api = SimpleNamespace(list=self._list)

    def _get(self, *, id: int) -> SimpleNamespace:
        return SimpleNamespace(id=id, task_number=len(self.tasks))

    def _import(self, *, id: int, request: list[dict[str, Any]], return_task_ids: bool) -> Any:
        self.imports += 1
        failing = self.imports == self.fail_on
        if failing and not self.lose_answer:
            raise httpx.ConnectError("refused")
        ids = []
        for item in request:
            task = SimpleNamespace(id=1000 + len(self.tasks), data=item["data"])
            self.tasks.append(task)
            ids.append(task.id)
        if failing:
            raise httpx.ReadTimeout("the answer was lost")
        return SimpleNamespace(task_ids=ids)

    def _list(self, *, project: int, fields: str, page_size: int) -> list[SimpleNamespace]:
        return list(self.tasks)

    def per_clip(self) -> Counter[int]:
        return Counter(int(t.data["refrain_clip_id"]) for t in self.tasks)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLabelStudio:
    ls = FakeLabelStudio()
    client = SimpleNamespace(projects=ls.projects, tasks=ls.tasks_api)
    monkeypatch.setattr(services, "_client_for", lambda link: client)
    monkeypatch.setattr(services, "PUSH_CHUNK", 2)
    return ls


@pytest.fixture
def link_and_clips() -> tuple[LabelStudioLink, list[Clip]]:
    project = ProjectFactory()
    link = LabelStudioLink.objects.create(
        project=project,
        base_url="http://ls.example:8080",
        ls_project_id=5,
        api_key="token",
        webhook_secret="s3cret",
        refrain_url="http://refrain.example",
    )
    return link, [ClipFactory(project=project) for _ in range(6)]


@pytest.mark.parametrize("lose_answer", [False, True], ids=["refused", "answer-lost"])
def test_a_retry_after_a_failed_chunk_creates_nothing_twice(
    fake: FakeLabelStudio, link_and_clips: tuple[LabelStudioLink, list[Clip]], lose_answer: bool
) -> None:
    link, clips = link_and_clips
    fake.fail_on, fake.lose_answer = 2, lose_answer
    with pytest.raises(LabelStudioSyncError, match="push again"):
        ls_push_tasks(link=link, clips=clips)
    # The first chunk's mapping survived the failure of the second.
    assert LabelStudioTask.objects.filter(link=link).count() == 2
    summary = ls_push_tasks(link=link, clips=clips)
    assert fake.per_clip() == Counter({c.id: 1 for c in clips})  # one Label Studio task per clip
    mapped = dict(LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id"))
    assert mapped == {int(t.data["refrain_clip_id"]): t.id for t in fake.tasks}
    assert summary.reconciled == (2 if lose_answer else 0)
    assert summary.created == (2 if lose_answer else 4)
    assert summary.already == 2
    again = ls_push_tasks(link=link, clips=clips)
    assert (again.created, again.reconciled, again.already) == (0, 0, 6)
    assert len(fake.tasks) == 6


def test_a_push_lost_whole_is_reconciled_from_label_studio(
    fake: FakeLabelStudio, link_and_clips: tuple[LabelStudioLink, list[Clip]]
) -> None:
    """A crash after Label Studio stored the tasks and before Refrain committed any mapping."""
    link, clips = link_and_clips
    ls_push_tasks(link=link, clips=clips[:4])
    LabelStudioTask.objects.filter(link=link).delete()  # as if the transaction never committed
    summary = ls_push_tasks(link=link, clips=clips)
    assert (summary.reconciled, summary.created) == (4, 2)
    assert fake.per_clip() == Counter({c.id: 1 for c in clips})


class FakeProjects:
    """Label Studio's project and webhook endpoints, counting what linking does remotely."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.updated: list[dict[str, Any]] = []
        self.hooks_created: list[dict[str, Any]] = []
        self.hooks_updated: list[dict[str, Any]] = []

    def client(self) -> SimpleNamespace:
        return SimpleNamespace(
            projects=SimpleNamespace(create=self._create, update=self._update),
            webhooks=SimpleNamespace(create=self._hook_create, update=self._hook_update),
        )

    def _create(self, **kw: Any) -> SimpleNamespace:
        self.created.append(kw)
        return SimpleNamespace(id=40 + len(self.created))

    def _update(self, *, id: int, **kw: Any) -> None:
        self.updated.append({"id": id, **kw})

    def _hook_create(self, **kw: Any) -> SimpleNamespace:
        self.hooks_created.append(kw)
        return SimpleNamespace(id=7)

    def _hook_update(self, *, id: int, **kw: Any) -> None:
        self.hooks_updated.append({"id": id, **kw})


def test_linking_twice_updates_the_link_and_never_makes_a_second_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ls = FakeProjects()
    monkeypatch.setattr(services, "ls_client", lambda **kw: ls.client())
    project = ProjectFactory(overlap=1)
    first = services.ls_project_link(
        project=project, base_url="http://ls:8080/", api_key="a", refrain_url="http://r"
    )
    project.overlap = 2
    project.save()
    again = services.ls_project_link(project=project, base_url="http://ls:8080", api_key="b")
    assert again.pk == first.pk and LabelStudioLink.objects.filter(project=project).count() == 1
    assert len(ls.created) == 1  # one Label Studio project
    assert ls.created[0]["sampling"] == ls.updated[-1]["sampling"] == "Uncertainty sampling"
    assert (
        ls.updated[-1]["id"] == first.ls_project_id and ls.updated[-1]["maximum_annotations"] == 2
    )
    assert (again.api_key, again.refrain_url, again.webhook_secret) == (
        "b",
        "http://r",
        first.webhook_secret,
    )
    assert len(ls.hooks_created) == 1 and ls.hooks_updated[-1]["id"] == 7


def test_a_conflicting_link_is_refused_before_anything_changes_remotely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ls = FakeProjects()
    monkeypatch.setattr(services, "ls_client", lambda **kw: ls.client())
    ours, theirs = ProjectFactory(), ProjectFactory()
    link = services.ls_project_link(project=theirs, base_url="http://ls:8080", api_key="a")
    before = (len(ls.created), len(ls.updated))
    with pytest.raises(services.LabelStudioLinkConflict, match=theirs.slug):
        services.ls_project_link(
            project=ours, base_url="http://ls:8080", api_key="a", ls_project_id=link.ls_project_id
        )
    with pytest.raises(services.LabelStudioLinkConflict, match="not 99"):
        services.ls_project_link(
            project=theirs, base_url="http://ls:8080", api_key="a", ls_project_id=99
        )
    assert (len(ls.created), len(ls.updated)) == before
    assert not LabelStudioLink.objects.filter(project=ours).exists()


def _ls_task(task_id: int, clip_id: int, anns: list[dict[str, Any]]) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, data={"refrain_clip_id": clip_id}, annotations=anns)


def _ann(ann_id: int, paths: list[list[str]], updated_at: str) -> dict[str, Any]:
    return {
        "id": ann_id,
        "result": [{"from_name": "genre", "type": "taxonomy", "value": {"taxonomy": paths}}],
        "completed_by": {"id": 1, "email": "ann@ls.example"},
        "updated_at": updated_at,
    }


def test_pull_is_incremental_and_beat_reconciles_every_link(
    monkeypatch: pytest.MonkeyPatch, link_and_clips: tuple[LabelStudioLink, list[Clip]]
) -> None:
    from annotation.integrations.labelstudio import tasks as ls_tasks

    link, clips = link_and_clips
    store = [
        _ls_task(1, clips[0].id, [_ann(11, [["Rock", "Rock/Punk"]], "2026-12-01T10:00:00Z")]),
        _ls_task(2, clips[1].id, [_ann(12, [["Jazz"]], "2026-12-01T10:00:00Z")]),
    ]
    client = SimpleNamespace(
        tasks=SimpleNamespace(list=lambda **kw: list(store)),
        users=SimpleNamespace(get=lambda **kw: pytest.fail("the email is in the annotation")),
    )
    monkeypatch.setattr(services, "_client_for", lambda link: client)
    ingested: list[int] = []
    real_ingest = services.ls_annotation_ingest

    def counting_ingest(**kw: Any) -> Any:
        ingested.append(kw["annotation"]["id"])
        return real_ingest(**kw)

    monkeypatch.setattr(services, "ls_annotation_ingest", counting_ingest)
    out = ls_tasks.ls_reconcile_links()  # what beat runs
    assert out[str(link.id)] == {"created": 2, "existing": 0, "errors": 0}
    # Nothing changed in Label Studio: the next pull reads no annotation again.
    ingested.clear()
    again = services.ls_pull_annotations(link=LabelStudioLink.objects.get(pk=link.pk))
    assert (again.created, again.existing, ingested) == (0, 2, [])
    # An edit made in Label Studio after the last pull is read and stored as a correction.
    store[1].annotations = [_ann(12, [["Rock", "Rock/Metal"]], "2099-01-01T00:00:00Z")]
    third = services.ls_pull_annotations(link=LabelStudioLink.objects.get(pk=link.pk))
    assert (third.created, third.existing, ingested) == (1, 1, [12])
    newest = Annotation.objects.filter(clip=clips[1]).order_by("-id").first()
    assert newest is not None and newest.supersedes_id is not None


def test_reconciliation_goes_on_past_an_unreachable_label_studio(
    monkeypatch: pytest.MonkeyPatch, link_and_clips: tuple[LabelStudioLink, list[Clip]]
) -> None:
    from annotation.integrations.labelstudio import tasks as ls_tasks

    link, _ = link_and_clips

    def refuse(**kw: Any) -> Any:
        raise httpx.ConnectError("connection refused")

    client = SimpleNamespace(tasks=SimpleNamespace(list=refuse))
    monkeypatch.setattr(services, "_client_for", lambda link: client)
    out = ls_tasks.ls_reconcile_links()
    assert "unreachable" in out[str(link.id)]["error"]
