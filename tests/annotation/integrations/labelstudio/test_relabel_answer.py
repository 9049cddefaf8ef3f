"""Which Label Studio annotation answers a routed relabel task, and asking while LS is down
(PostgreSQL; no Label Studio needed: the live loop is in test_labelstudio_relabel_live.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotation.integrations.labelstudio.services import (
    IngestResult,
    ls_annotation_ingest,
    ls_relabels_request,
    offline_email,
)
from annotation.models import Annotation, LabelStudioLink, LabelStudioTask, Task
from annotation.selectors import TaxonomyIndex
from annotation.services.enqueue import LabelIssueFound, task_enqueue
from tests.annotation.integrations.labelstudio.test_ingest_and_webhook import link, ls_annotation
from tests.factories import ClipFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db
__all__ = ["link"]  # the fixture

PUNK = [["Rock", "Rock/Punk"]]


def ingest(link: LabelStudioLink, clip_id: int, annotation: dict[str, Any]) -> IngestResult:
    """One annotation in, its annotator read from ``created_username`` as a pull reads it."""
    return ls_annotation_ingest(
        link=link,
        annotation=annotation,
        task={"id": 1, "data": {"refrain_clip_id": clip_id}},
        index=TaxonomyIndex.for_version(link.project.taxonomy_version),
        email_for=offline_email,
    )


def relabel_asked(link: LabelStudioLink, *, after: int) -> tuple[Task, LabelStudioTask]:
    """A routed relabel task whose clip was asked in Label Studio when its newest LS annotation had
    id ``after`` (what ls_request_second_opinion records)."""
    clip = ClipFactory(project=link.project)
    source = LabelIssueFound(clip_id=clip.id, issue_id=clip.id, run_id=1, issue_type="x", score=0.1)
    task = Task.objects.get(pk=task_enqueue(project=link.project, sources=[source]).task_id(source))
    mapped = LabelStudioTask.objects.create(
        link=link, clip=clip, ls_task_id=clip.id, relabel_task=task, relabel_after=after
    )
    return task, mapped


def test_a_new_annotation_by_someone_new_answers_the_relabel_task(link: LabelStudioLink) -> None:
    task, mapped = relabel_asked(link, after=10)
    old = ingest(link, mapped.clip_id, ls_annotation(10, PUNK))  # made before the request
    assert Annotation.objects.get(pk=old.annotation_id).task_id is None
    task.refresh_from_db()
    assert task.status == Task.Status.OPEN
    b = {"created_username": " b@ls.example, 2", "completed_by": 2}
    new = ingest(link, mapped.clip_id, ls_annotation(11, PUNK, **b))
    answer = Annotation.objects.get(pk=new.annotation_id)
    task.refresh_from_db()
    assert answer.task_id == task.pk and answer.kind == Annotation.Kind.RELABEL
    assert (task.status, task.n_submitted) == (Task.Status.DONE, 1)
    # Ingested again (webhook and pull), or edited in LS: the task counts it once.
    assert ingest(link, mapped.clip_id, ls_annotation(11, PUNK, **b)).status == "existing"
    edited = ingest(link, mapped.clip_id, ls_annotation(11, [["Jazz", "Jazz/Bebop"]], **b))
    assert edited.status == "superseded"
    assert Annotation.objects.get(pk=edited.annotation_id).task_id is None
    task.refresh_from_db()
    assert task.n_submitted == 1
    # A later annotation finds the task done: an ordinary label.
    c = {"created_username": " c@ls.example, 3", "completed_by": 3}
    late = ingest(link, mapped.clip_id, ls_annotation(12, PUNK, **c))
    assert Annotation.objects.get(pk=late.annotation_id).task_id is None


def test_an_annotator_who_labelled_the_clip_before_does_not_answer(
    link: LabelStudioLink,
) -> None:
    task, mapped = relabel_asked(link, after=0)
    member = MembershipFactory(project=link.project, user=UserFactory(email="ann@ls.example")).user
    Annotation.objects.create(
        clip=mapped.clip, taxonomy_version=link.project.taxonomy_version, user=member, source="x"
    )
    out = ingest(link, mapped.clip_id, ls_annotation(5, PUNK))  # by ann@ls.example = member
    assert Annotation.objects.get(pk=out.annotation_id).task_id is None
    task.refresh_from_db()
    assert task.status == Task.Status.OPEN


def test_asking_while_label_studio_is_down_is_reported_and_retried(
    link: LabelStudioLink,
) -> None:
    task, mapped = relabel_asked(link, after=0)
    mapped.relabel_task = None  # routed, not asked yet
    mapped.save(update_fields=["relabel_task"])
    link.base_url = "http://127.0.0.1:9"  # nothing listens
    link.save(update_fields=["base_url"])
    out = ls_relabels_request()
    assert out["asked"] == []
    assert len(out["errors"]) == 1 and f"relabel task {task.pk}" in out["errors"][0]
    assert "unreachable" in out["errors"][0]
    mapped.refresh_from_db()
    assert mapped.relabel_task_id is None  # nothing recorded that did not happen: asked again


def test_second_opinion_command_refuses_unknown_or_answered_ids(link: LabelStudioLink) -> None:
    task, _ = relabel_asked(link, after=0)
    issue_id = int(str(task.dedupe_key).removeprefix("issue:"))
    Task.objects.filter(pk=task.pk).update(status=Task.Status.DONE)
    with pytest.raises(CommandError, match=rf"issue\(s\) \[{issue_id}\] .*already answered"):
        call_command("labelstudio", "second-opinion", str(link.pk), "--issue", str(issue_id))
    other = ClipFactory()  # another project's clip
    with pytest.raises(CommandError, match=rf"clip\(s\) \[{other.id}\] not in"):
        call_command("labelstudio", "second-opinion", str(link.pk), "--clip", str(other.id))
