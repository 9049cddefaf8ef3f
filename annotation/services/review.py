"""Review: a reviewer accepts one annotation of a clip, writes a correction, or sends it back.

Each decision is a :class:`~annotation.models.ReviewDecision` row; a correction is a new annotation
that ``supersedes`` the one it corrects; sending back queues a relabel task, which the queue offers
only to annotators who have not heard the clip yet. Open review tasks of the clip are closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation import events
from annotation.models import (
    Annotation,
    AnnotationLabel,
    Assignment,
    Clip,
    ReviewDecision,
    Task,
    TaxonomyNode,
)
from annotation.selectors import taxonomy_index_cached
from annotation.services.annotations import (
    MAX_NOTE_LENGTH,
    LabelError,
    annotation_create,
    labels_resolve,
)
from annotation.services.enqueue import SentBack, task_enqueue
from annotation.services.tasks import InvalidLabels, QueueError
from refrain.errors import Invalid


class ReviewError(QueueError, Invalid):
    code = "invalid_review"


@dataclass(frozen=True)
class ClipAnnotationView:
    annotation: Annotation
    explicit: list[TaxonomyNode]
    implied: list[TaxonomyNode]


def clip_annotations(*, clip: Clip) -> list[ClipAnnotationView]:
    """The clip's annotations, oldest first, each with its explicit and implied nodes (2 queries)."""
    annotations = list(
        Annotation.objects.filter(clip=clip).select_related("user").order_by("created_at", "pk")
    )
    by_ann: dict[int, tuple[list[TaxonomyNode], list[TaxonomyNode]]] = {
        a.pk: ([], []) for a in annotations
    }
    for label in (
        AnnotationLabel.objects.filter(annotation__clip=clip)
        .select_related("node")
        .order_by("node__index")
    ):
        explicit, implied = by_ann[label.annotation_id]
        (explicit if label.explicit else implied).append(label.node)
    return [ClipAnnotationView(a, *by_ann[a.pk]) for a in annotations]


def review_decide(
    *,
    clip: Clip,
    reviewer: AbstractBaseUser,
    decision: str,
    annotation_id: int | None = None,
    labels: Sequence[str] = (),
    note: str = "",
) -> ReviewDecision:
    """Record one review decision on ``clip`` (the caller has checked the reviewer role).

    Raises
    ------
    ReviewError
        For an unknown decision, an annotation of another clip, a missing annotation for
        ``accept``, or an oversized note.
    InvalidLabels
        For a correction whose labels are not nodes of the project's taxonomy version.
    """
    if decision not in ReviewDecision.Decision.values:
        raise ReviewError(
            f"unknown decision {decision!r}; expected one of "
            + ", ".join(ReviewDecision.Decision.values)
        )
    if len(note) > MAX_NOTE_LENGTH:
        raise ReviewError(f"note is {len(note)} characters; the limit is {MAX_NOTE_LENGTH}")
    target: Annotation | None = None
    if annotation_id is not None:
        target = Annotation.objects.filter(pk=annotation_id, clip=clip).first()
        if target is None:
            raise ReviewError(f"annotation {annotation_id} is not an annotation of this clip")
    if decision == ReviewDecision.Decision.ACCEPT and target is None:
        raise ReviewError("say which annotation you accept")
    now = timezone.now()
    project = clip.project
    with transaction.atomic():
        row = ReviewDecision(
            clip=clip, reviewer=reviewer, decision=decision, annotation=target, note=note
        )
        if decision == ReviewDecision.Decision.CORRECT:
            index = taxonomy_index_cached(project.taxonomy_version)
            try:
                node_ids = labels_resolve(index=index, labels=labels)
                row.correction, _ = annotation_create(
                    clip=clip,
                    index=index,
                    explicit_node_ids=node_ids,
                    source=f"review:{reviewer.get_username()}",
                    kind=Annotation.Kind.REVIEW,
                    user=reviewer,
                    note=note,
                    supersedes=target,
                )
            except LabelError as exc:
                raise InvalidLabels(str(exc)) from exc
        elif decision == ReviewDecision.Decision.SEND_BACK:
            source = SentBack(
                clip_id=clip.pk,
                reviewer=reviewer.get_username(),
                note=note,
                n_decisions_before=ReviewDecision.objects.filter(clip=clip).count(),
            )
            row.relabel_task_id = task_enqueue(project=project, sources=[source]).task_id(source)
        row.save()
        _close_review_tasks(clip=clip, reviewer=reviewer, now=now)
        # After commit: a correction is a new opinion for consensus; an accept settles a tie.
        if row.correction_id is not None:
            events.publish(
                events.annotation_committed,
                annotation_id=row.correction_id,
                clip_id=clip.pk,
                project_id=project.pk,
                origin="review",
            )
        events.publish(
            events.review_decided,
            decision_id=row.pk,
            clip_id=clip.pk,
            project_id=project.pk,
            decision=row.decision,
        )
    return row


def _close_review_tasks(*, clip: Clip, reviewer: AbstractBaseUser, now: object) -> None:
    open_reviews = Task.objects.filter(
        clip=clip, kind=Task.Kind.REVIEW, status=Task.Status.OPEN
    ).select_for_update()
    ids = list(open_reviews.values_list("pk", flat=True))
    if not ids:
        return
    Assignment.objects.filter(
        task_id__in=ids, user=reviewer, status=Assignment.Status.ACTIVE
    ).update(status=Assignment.Status.SUBMITTED, finished_at=now)
    Task.objects.filter(pk__in=ids).update(status=Task.Status.DONE, completed_at=now)
