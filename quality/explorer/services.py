"""The clip explorer's bulk actions: send a selection for a blind relabel, queue it for labelling.

Both go through the one task producer, :func:`annotation.services.enqueue.task_enqueue`, with the
source that says why (``Requested`` for a second opinion, ``Manual`` for labelling), so repeating an
action finds the tasks it made before instead of queueing them twice. A selection is either the
checked ids or every clip matching the explorer's filter; :func:`explorer_selection` checks it
(ids of this project only, at most :data:`BULK_LIMIT`) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count

from annotation.models import Annotation, Clip, Project, Task
from annotation.services.enqueue import Manual, Requested, task_enqueue
from quality.explorer.filters import ExplorerQuery
from quality.explorer.selectors import explorer_clip_ids
from refrain.errors import Invalid

#: Most clips one bulk action may touch (a larger selection is refused: narrow the filter).
BULK_LIMIT = 5_000
#: ``Manual`` reason of the explorer's "queue for labelling".
QUEUE_REASON = "explorer"


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk action did: tasks created now, tasks that existed already, clips skipped (with
    why)."""

    created: int
    existing: int
    skipped: dict[str, int]
    task_ids: list[int]

    def message(self, verb: str) -> str:
        parts = [f"{self.created} {verb}"]
        if self.existing:
            parts.append(f"{self.existing} already queued")
        parts += [f"{n} skipped ({why})" for why, n in self.skipped.items() if n]
        return ", ".join(parts) + "."


def explorer_selection(
    *, project: Project, clip_ids: list[int] | None, query: ExplorerQuery | None
) -> list[int]:
    """The clips a bulk action acts on: ``clip_ids`` (every one must be this project's), or every
    clip matching ``query``. Raises ``Invalid`` for an empty, foreign or too large selection."""
    if clip_ids is not None:
        wanted = sorted(set(clip_ids))
        if not wanted:
            raise Invalid("no clips selected: tick some rows, or choose all matching the filter")
        if len(wanted) > BULK_LIMIT:
            raise Invalid(f"{len(wanted)} clips selected; one action takes at most {BULK_LIMIT}")
        found = set(
            Clip.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True)
        )
        foreign = [c for c in wanted if c not in found]
        if foreign:
            shown = ", ".join(str(c) for c in foreign[:10])
            raise Invalid(
                f"clip(s) {shown}{'...' if len(foreign) > 10 else ''} are not in project "
                f"{project.slug}; nothing was done"
            )
        return wanted
    if query is None:
        raise Invalid("choose the selected rows or all clips matching the filter")
    ids = explorer_clip_ids(project=project, query=query, limit=BULK_LIMIT)
    if not ids:
        raise Invalid("no clip matches the filter; nothing was done")
    if len(ids) > BULK_LIMIT:
        raise Invalid(
            f"more than {BULK_LIMIT} clips match the filter; narrow it (one action takes at most "
            f"{BULK_LIMIT})"
        )
    return sorted(ids)


def _outcome(
    enqueued_ids: dict[str, int], created: frozenset[str], skipped: dict[str, int]
) -> BulkOutcome:
    return BulkOutcome(
        created=len(created),
        existing=len(enqueued_ids) - len(created),
        skipped=skipped,
        task_ids=sorted(enqueued_ids.values()),
    )


def explorer_relabel(
    *, project: Project, clip_ids: list[int], user: AbstractBaseUser
) -> BulkOutcome:
    """A blind second opinion on each labelled, ready clip (``Requested``; a relabel is offered only
    to annotators who never heard the clip). Clips never labelled, or failed, are skipped."""
    counts = dict(
        Annotation.objects.filter(clip_id__in=clip_ids)
        .values("clip_id")
        .annotate(n=Count("id"))
        .values_list("clip_id", "n")
    )
    ready = set(
        Clip.objects.filter(project=project, pk__in=clip_ids, status=Clip.Status.READY).values_list(
            "pk", flat=True
        )
    )
    sources = [
        Requested(clip_id=c, requested_by=user.get_username(), n_annotations=counts[c])
        for c in clip_ids
        if c in counts and c in ready
    ]
    skipped = {
        "not labelled yet": sum(1 for c in clip_ids if c not in counts),
        "audio failed": sum(1 for c in clip_ids if c in counts and c not in ready),
    }
    with transaction.atomic():
        done = task_enqueue(project=project, sources=sources)
    return _outcome(done.task_ids, done.created, skipped)


def explorer_queue(*, project: Project, clip_ids: list[int]) -> BulkOutcome:
    """A label task for each ready clip (``Manual``, the project's overlap), unless the clip has an
    open label task already (an import's, an acquisition's)."""
    ready = set(
        Clip.objects.filter(project=project, pk__in=clip_ids, status=Clip.Status.READY).values_list(
            "pk", flat=True
        )
    )
    waiting = set(
        Task.objects.filter(
            clip_id__in=clip_ids, kind=Task.Kind.LABEL, status=Task.Status.OPEN
        ).values_list("clip_id", flat=True)
    )
    chosen = [c for c in clip_ids if c in ready and c not in waiting]
    explorer_keys = {Manual(clip_id=c, reason=QUEUE_REASON).key() for c in clip_ids}
    with transaction.atomic():
        done = task_enqueue(project=project, sources=Manual.for_clips(chosen, reason=QUEUE_REASON))
    # An open label task this action made earlier counts as "already queued", not "skipped".
    mine = set(
        Task.objects.filter(
            project=project, dedupe_key__in=explorer_keys, status=Task.Status.OPEN
        ).values_list("clip_id", flat=True)
    )
    skipped = {
        "audio failed": sum(1 for c in clip_ids if c not in ready),
        "a label task is open": sum(1 for c in clip_ids if c in waiting and c not in mine),
    }
    existing = sum(1 for c in clip_ids if c in waiting and c in mine)
    return BulkOutcome(
        created=len(done.created),
        existing=existing + len(done.task_ids) - len(done.created),
        skipped=skipped,
        task_ids=sorted(done.task_ids.values()),
    )
