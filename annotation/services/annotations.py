"""Creating annotations: label resolution, ancestor closure, idempotency. Never an update."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from annotation.models import Annotation, AnnotationLabel, Assignment, Clip, Task
from annotation.selectors import TaxonomyIndex
from refrain.errors import Invalid

MAX_NOTE_LENGTH = 2000
MAX_LABELS = 64


class LabelError(Invalid, ValueError):
    """Labels that cannot be stored; the message names each label at fault."""


def labels_resolve(*, index: TaxonomyIndex, labels: Sequence[str]) -> list[int]:
    """Node ids for keys or full paths of ``index``'s version, with every ancestor added.

    Raises
    ------
    LabelError
        For an empty set, too many labels, or labels that are not nodes of this version.
    """
    if not labels:
        raise LabelError("at least one label is required")
    if len(labels) > MAX_LABELS:
        raise LabelError(f"at most {MAX_LABELS} labels per annotation, got {len(labels)}")
    unknown = [lab for lab in labels if not isinstance(lab, str) or index.lookup(lab) is None]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise LabelError(
            f"not in taxonomy {index.version}: {shown}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    explicit = [index.lookup(lab).id for lab in labels]  # type: ignore[union-attr]
    return explicit


def annotation_create(
    *,
    clip: Clip,
    index: TaxonomyIndex,
    explicit_node_ids: Sequence[int],
    source: str,
    kind: str = Annotation.Kind.LABEL,
    user: AbstractBaseUser | None = None,
    task: Task | None = None,
    assignment: Assignment | None = None,
    unsure: bool = False,
    note: str = "",
    time_spent_ms: int | None = None,
    idempotency_key: str | None = None,
    supersedes: Annotation | None = None,
) -> tuple[Annotation, bool]:
    """Store one ancestor-closed label set. Returns ``(annotation, created)``.

    A repeated ``idempotency_key`` from the same user returns the stored annotation and creates
    nothing, so a client may resubmit after a network error. The key's unique constraint decides:
    the insert is tried first (in a savepoint) and the stored row is read only when it conflicts,
    so a first submission, the usual case, costs no lookup.
    """
    if len(note) > MAX_NOTE_LENGTH:
        raise LabelError(f"note is {len(note)} characters; the limit is {MAX_NOTE_LENGTH}")
    closed = index.closure(list(explicit_node_ids))
    explicit = set(explicit_node_ids)
    try:
        with transaction.atomic():
            ann = Annotation.objects.create(
                clip=clip,
                taxonomy_version=index.version,
                task=task,
                assignment=assignment,
                user=user,
                kind=kind,
                source=source,
                unsure=unsure,
                note=note,
                time_spent_ms=time_spent_ms,
                idempotency_key=idempotency_key,
                supersedes=supersedes,
            )
            AnnotationLabel.objects.bulk_create(
                [
                    AnnotationLabel(annotation=ann, node_id=nid, explicit=nid in explicit)
                    for nid in closed
                ]
            )
    except IntegrityError:
        # The key was used before (a resubmit, or two concurrent ones): return the stored row.
        if idempotency_key is not None and user is not None:
            existing = Annotation.objects.filter(user=user, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing, False
        raise
    return ann, True


def consensus_annotations_set(*, pins: Mapping[int, int | None]) -> int:
    """Record, per clip id, the annotation its annotators' consensus agrees with (None: no
    consensus of several people). The consensus service of the quality layer is the only caller;
    :func:`annotation.selectors.current_labels` reads it. Writes only the clips that change.
    Returns how many changed."""
    if not pins:
        return 0
    now = dict(Clip.objects.filter(pk__in=list(pins)).values_list("pk", "consensus_annotation_id"))
    changed = [Clip(pk=c, consensus_annotation_id=a) for c, a in pins.items() if now.get(c, a) != a]
    Clip.objects.bulk_update(changed, ["consensus_annotation"], batch_size=2000)
    return len(changed)
