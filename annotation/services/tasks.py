"""The work queue: handing out tasks under leases, taking submissions, returning abandoned work.

Invariants, each held by a lock named where it is taken:

* a task never has more live holders + submissions than its ``overlap``;
* a clip is offered to one user at most once (across all its tasks: label, relabel, review), so
  relabels go to fresh ears and nobody reviews their own labels;
* a submission is stored once per ``idempotency_key``; a failed submission writes nothing.

Expired leases are returned lazily (a candidate's stale assignments are marked when the task is
taken) and in bulk by :func:`assignments_expire`, which the scheduler may run every minute.
PostgreSQL takes the queue rows with ``FOR UPDATE SKIP LOCKED``; SQLite (the embedded setup)
has no row locks and serialises writers on its database lock instead, through the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils import timezone

from annotation import events
from annotation.models import (
    Annotation,
    AnnotationLabel,
    Assignment,
    Clip,
    Membership,
    Project,
    Task,
)
from annotation.selectors import taxonomy_index_cached
from annotation.services.annotations import LabelError, annotation_create, labels_resolve
from annotation.services.enqueue import Disagreement, task_enqueue
from refrain.errors import ApplicationError, Conflict, Invalid, NotFound

# An annotator holds the task on screen and, prefetched, the next one.
MAX_HELD = 2
# How many candidates to step over that another annotator filled between this statement's snapshot
# and its row lock. Each retry is one index probe; 5 was too few at 50 annotators hammering the top
# of the queue (a spurious 204 in the benchmark), so be generous.
MAX_TAKE_ATTEMPTS = 50
LABELLING_KINDS: tuple[str, ...] = (Task.Kind.LABEL, Task.Kind.RELABEL)


# --- errors: each is also a kind of refrain.errors (the API maps kinds to statuses) --------------


class QueueError(ApplicationError):
    """A queue operation refused; each subclass is also the kind of refusal it is."""


class TaskNotFound(QueueError, NotFound):
    code = "task_not_found"


class NotHeld(QueueError, Conflict):
    code = "not_held"


class LeaseExpired(QueueError, Conflict):
    code = "lease_expired"


class AlreadySubmitted(QueueError, Conflict):
    code = "already_submitted"


class IdempotencyConflict(QueueError, Conflict):
    code = "idempotency_conflict"


class TaxonomyVersionMismatch(QueueError, Conflict):
    code = "taxonomy_version_mismatch"


class InvalidLabels(QueueError, Invalid):
    code = "invalid_labels"


class WrongTaskKind(QueueError, Conflict):
    code = "wrong_task_kind"


# --- taking a task --------------------------------------------------------------------------------


def _lock_membership(*, project_id: int, user: AbstractBaseUser) -> Membership:
    # Lock: the caller's membership row. One user's concurrent requests in one project (a double
    # click, the prefetch racing the page) run one at a time, so the clip-once and MAX_HELD checks
    # below cannot be raced by the same user. Different users never wait on each other here.
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("project", "project__taxonomy_version__taxonomy")
        .filter(project_id=project_id, user=user)
        .first()
    )
    if membership is None:
        raise TaskNotFound(f"project {project_id} not found among your projects")
    return membership


def _model_order(model: type[Task] | type[Clip], wanted: set[str]) -> tuple[str, ...]:
    # Model.from_db takes a subset of fields in the model's own field order.
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in wanted)


# The columns the queue reads from a taken task and its clip; the rest load only if asked for.
_TASK_COLUMNS = _model_order(
    Task,
    {
        *("id", "project_id", "clip_id", "kind", "status"),
        *("priority", "reason", "overlap", "n_submitted"),
    },
)
_CLIP_COLUMNS = _model_order(
    Clip,
    {
        *("id", "project_id", "external_id", "original_name", "storage", "storage_key", "format"),
        *("status", "duration_s", "segment_start_s", "segment_end_s"),
    },
)


def _lock_next_candidate(
    *,
    project: Project,
    user: AbstractBaseUser,
    kinds: Sequence[str],
    now: datetime,
    skip: Sequence[int],
) -> Task | None:
    """Lock and return the first open task ``user`` may take, best first (its clip attached), or None.

    The queue as a queryset (``orm_queue`` in ``tests/annotation/test_queue.py``, which checks that
    the two agree) with ``.exclude(pk__in=skip).select_for_update(skip_locked=True,
    of=("self",)).first()``, written out: building and compiling that queryset was the largest
    share of a next-task request's Python time. PostgreSQL locks the row ``FOR UPDATE SKIP LOCKED``; SQLite has no row locks (its writers
    are serialised by the database lock) and runs the query without the clause.
    """
    if not kinds:
        return None
    ops = connection.ops
    qn = ops.quote_name
    task_t, clip_t = qn(Task._meta.db_table), qn(Clip._meta.db_table)
    assign_t, ann_t = qn(Assignment._meta.db_table), qn(Annotation._meta.db_table)
    cols = [f"t.{qn(Task._meta.get_field(a).column)}" for a in _TASK_COLUMNS]
    cols += [f"c.{qn(Clip._meta.get_field(a).column)}" for a in _CLIP_COLUMNS]
    kind_marks = ", ".join(["%s"] * len(kinds))
    skip_sql = f"AND t.id NOT IN ({', '.join(['%s'] * len(skip))})" if skip else ""
    lock_sql = ""
    if connection.features.has_select_for_update_skip_locked:
        lock_sql = "FOR UPDATE OF t SKIP LOCKED"
    sql = f"""
        SELECT {", ".join(cols)}
        FROM {task_t} t INNER JOIN {clip_t} c ON c.id = t.clip_id
        WHERE t.project_id = %s AND t.status = %s AND t.kind IN ({kind_marks}) {skip_sql}
          AND t.n_submitted < t.overlap - (
            SELECT COUNT(*) FROM {assign_t} h
            WHERE h.task_id = t.id AND h.status = %s AND h.lease_expires_at > %s)
          AND NOT EXISTS (
            SELECT 1 FROM {assign_t} a INNER JOIN {task_t} t2 ON t2.id = a.task_id
            WHERE a.user_id = %s AND t2.clip_id = t.clip_id)
          AND NOT EXISTS (
            SELECT 1 FROM {ann_t} n WHERE n.user_id = %s AND n.clip_id = t.clip_id)
        ORDER BY t.priority DESC, t.id ASC
        LIMIT 1 {lock_sql}"""
    params = [project.pk, Task.Status.OPEN, *kinds, *skip]
    params += [Assignment.Status.ACTIVE, ops.adapt_datetimefield_value(now), user.pk, user.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(_TASK_COLUMNS)
    task = Task.from_db(connection.alias, _TASK_COLUMNS, row[:n])
    task.clip = Clip.from_db(connection.alias, _CLIP_COLUMNS, row[n:])
    return task


def check_task_has_slot(*, task: Task, now: datetime) -> bool:
    """Whether ``task`` (locked by the caller) can take one more holder; returns stale leases.

    The candidate query ran on a snapshot taken before the row lock, so a holder committed in
    between is invisible to it; this count runs after the lock and sees every committed holder.
    """
    counts = Assignment.objects.filter(task=task, status=Assignment.Status.ACTIVE).aggregate(
        live=Count("pk", filter=Q(lease_expires_at__gt=now)),
        stale=Count("pk", filter=Q(lease_expires_at__lte=now)),
    )
    if counts["stale"]:
        Assignment.objects.filter(
            task=task, status=Assignment.Status.ACTIVE, lease_expires_at__lte=now
        ).update(status=Assignment.Status.EXPIRED, finished_at=now)
    return task.n_submitted + counts["live"] < task.overlap


def do_task_take(*, task: Task, user: AbstractBaseUser, now: datetime) -> Assignment:
    """Give ``task`` (locked by the caller, slot checked) to ``user`` under a fresh lease."""
    assignment = Assignment.objects.create(
        task=task,
        user=user,
        lease_expires_at=now + timedelta(seconds=task.project.lease_seconds),
        created_at=now,
    )
    assignment.task = task
    return assignment


def task_next_for_annotator(
    *,
    project_id: int,
    user: AbstractBaseUser,
    kinds: Sequence[str] = LABELLING_KINDS,
    exclude_task_ids: Sequence[int] = (),
    now: datetime | None = None,
) -> Assignment | None:
    """The task the user should work on next, or None when the queue has nothing for them.

    A task the user already holds (reloaded page, lost tab) comes back first, except those in
    ``exclude_task_ids`` (the one on screen, when the page asks for the next one to prefetch).
    Otherwise the highest-priority open task with a free slot, whose clip the user has never been
    offered, is taken under a lease of ``project.lease_seconds``.
    """
    now = now or timezone.now()
    with transaction.atomic():
        membership = _lock_membership(project_id=project_id, user=user)
        project = membership.project
        held = list(
            Assignment.objects.filter(
                user=user,
                task__project=project,
                task__kind__in=list(kinds),
                status=Assignment.Status.ACTIVE,
                lease_expires_at__gt=now,
            )
            .select_related("task", "task__clip")
            .order_by("created_at", "pk")[: MAX_HELD + 1]
        )
        for assignment in held:
            if assignment.task_id not in exclude_task_ids:
                assignment.task.project = project
                return assignment
        if len(held) >= MAX_HELD:
            return None
        skip: list[int] = list(exclude_task_ids)
        for _ in range(MAX_TAKE_ATTEMPTS):
            # Lock: the task row, FOR UPDATE SKIP LOCKED. Rows another annotator is taking right
            # now are stepped over instead of waited on; every writer of a task's assignments
            # holds this lock, so check_task_has_slot's count is exact.
            task = _lock_next_candidate(project=project, user=user, kinds=kinds, now=now, skip=skip)
            if task is None:
                return None
            task.project = project
            if check_task_has_slot(task=task, now=now):
                return do_task_take(task=task, user=user, now=now)
            skip.append(task.pk)
        return None


def _held_assignment(*, task_id: int, user: AbstractBaseUser, lock: bool) -> Assignment:
    qs = Assignment.objects.select_related(
        "task", "task__project", "task__project__taxonomy_version", "task__clip"
    ).filter(task_id=task_id, user=user)
    if lock:
        # Lock: the user's assignment row, so two submits of one assignment run one at a time.
        qs = qs.select_for_update(of=("self",))
    assignment = qs.first()
    if assignment is not None:
        return assignment
    member_of_task_project = Task.objects.filter(
        pk=task_id, project__memberships__user=user
    ).exists()
    if member_of_task_project:
        raise NotHeld(f"you do not hold task {task_id}; ask for the next task first")
    raise TaskNotFound(f"task {task_id} not found among your projects")


def assignment_renew(
    *, task_id: int, user: AbstractBaseUser, now: datetime | None = None
) -> Assignment:
    """Extend the user's lease on a task they still hold (the page sends this while open)."""
    now = now or timezone.now()
    with transaction.atomic():
        assignment = _held_assignment(task_id=task_id, user=user, lock=True)
        _require_live(assignment, now=now)
        assignment.lease_expires_at = now + timedelta(seconds=assignment.task.project.lease_seconds)
        Assignment.objects.filter(pk=assignment.pk).update(
            lease_expires_at=assignment.lease_expires_at
        )
    return assignment


def assignment_skip(*, task_id: int, user: AbstractBaseUser, now: datetime | None = None) -> None:
    """Give the task back; its slot returns to the queue and it is never offered to this user."""
    now = now or timezone.now()
    with transaction.atomic():
        assignment = _held_assignment(task_id=task_id, user=user, lock=True)
        if assignment.status == Assignment.Status.SKIPPED:
            return  # idempotent
        _require_live(assignment, now=now)
        Assignment.objects.filter(pk=assignment.pk).update(
            status=Assignment.Status.SKIPPED, finished_at=now
        )


def assignments_expire(*, now: datetime | None = None) -> int:
    """Mark every lapsed lease expired; for the scheduler (e.g. every minute). Returns the count."""
    now = now or timezone.now()
    return Assignment.objects.filter(
        status=Assignment.Status.ACTIVE, lease_expires_at__lte=now
    ).update(status=Assignment.Status.EXPIRED, finished_at=now)


def _require_live(assignment: Assignment, *, now: datetime) -> None:
    status = assignment.status
    if status == Assignment.Status.SUBMITTED:
        raise AlreadySubmitted(f"task {assignment.task_id} was already submitted")
    if status == Assignment.Status.SKIPPED:
        raise NotHeld(f"you skipped task {assignment.task_id}")
    if status == Assignment.Status.EXPIRED or assignment.lease_expires_at <= now:
        raise LeaseExpired(
            f"your hold on task {assignment.task_id} expired at "
            f"{assignment.lease_expires_at:%H:%M:%S} UTC and the task went back to the queue"
        )


# --- submitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    annotation: Annotation
    created: bool
    task: Task
    # The stored label set as node keys in taxonomy order, explicit and implied, when this call
    # wrote it (known from the taxonomy index, so the answer needs no read-back); None on a replay.
    label_keys: tuple[list[str], list[str]] | None = None


def annotation_submit(
    *,
    task_id: int,
    user: AbstractBaseUser,
    labels: Sequence[str],
    unsure: bool = False,
    note: str = "",
    idempotency_key: str | None = None,
    time_spent_ms: int | None = None,
    taxonomy_version_id: int | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Store the user's labels for a task they hold, and release their slot as done.

    Resubmitting with the same ``idempotency_key`` returns the stored annotation and writes
    nothing. Every failure raises a :class:`QueueError` (or subclass) before anything is written,
    and the whole submission is one transaction.
    """
    now = now or timezone.now()
    with transaction.atomic():
        assignment = _held_assignment(task_id=task_id, user=user, lock=True)
        task = assignment.task
        project = task.project
        if assignment.status != Assignment.Status.ACTIVE and idempotency_key:
            previous = Annotation.objects.filter(user=user, idempotency_key=idempotency_key).first()
            if previous is not None and previous.assignment_id == assignment.pk:
                return SubmitResult(previous, False, task)
        _require_live(assignment, now=now)
        if task.kind == Task.Kind.REVIEW:
            raise WrongTaskKind(f"task {task_id} is a review task; record a review decision")
        if taxonomy_version_id is not None and taxonomy_version_id != project.taxonomy_version_id:
            raise TaxonomyVersionMismatch(
                f"labels were picked on taxonomy version {taxonomy_version_id}, but "
                f"{project.name} now uses {project.taxonomy_version} "
                f"(id {project.taxonomy_version_id}); reload the page"
            )
        index = taxonomy_index_cached(project.taxonomy_version)
        try:
            node_ids = labels_resolve(index=index, labels=labels)
            annotation, created = annotation_create(
                clip=task.clip,
                index=index,
                explicit_node_ids=node_ids,
                source=f"user:{user.get_username()}",
                kind=Annotation.Kind.RELABEL
                if task.kind == Task.Kind.RELABEL
                else Annotation.Kind.LABEL,
                user=user,
                task=task,
                assignment=assignment,
                unsure=unsure,
                note=note,
                time_spent_ms=time_spent_ms,
                idempotency_key=idempotency_key,
            )
        except LabelError as exc:
            raise InvalidLabels(str(exc)) from exc
        if not created:
            # The key was used before, for another task: refuse rather than mislabel this one.
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used for another annotation"
            )
        Assignment.objects.filter(pk=assignment.pk).update(
            status=Assignment.Status.SUBMITTED, finished_at=now
        )
        # Lock: the task row (an UPDATE's row lock), so concurrent submits count one by one.
        Task.objects.filter(pk=task.pk).update(
            n_submitted=F("n_submitted") + 1,
            status=Case(
                When(n_submitted__gte=F("overlap") - 1, then=Value(Task.Status.DONE)),
                default=F("status"),
            ),
            completed_at=Case(
                When(n_submitted__gte=F("overlap") - 1, then=Value(now)),
                default=F("completed_at"),
            ),
        )
        task.n_submitted += 1
        if task.n_submitted >= task.overlap:
            task.status = Task.Status.DONE
            if task.overlap > 1:
                review_if_disagreement(task=task)
        # After commit: the layers above update consensus, close the label issue this answers,
        # and start a relabel cycle when enough new annotations have arrived.
        events.publish(
            events.annotation_committed,
            annotation_id=annotation.pk,
            clip_id=task.clip_id,
            project_id=task.project_id,
            origin="submit",
        )
    explicit = set(node_ids)
    closed = index.closure(node_ids)
    label_keys = (
        [index.by_id[i].key for i in closed if i in explicit],
        [index.by_id[i].key for i in closed if i not in explicit],
    )
    return SubmitResult(annotation, True, task, label_keys)


def review_if_disagreement(*, task: Task) -> int | None:
    """When the annotators of a finished multi-annotator task disagree, queue a review of the clip
    (returns the review task's id)."""
    label_sets: dict[int, set[int]] = {}
    for ann_id, node_id in AnnotationLabel.objects.filter(annotation__task=task).values_list(
        "annotation_id", "node_id"
    ):
        label_sets.setdefault(ann_id, set()).add(node_id)
    distinct = {frozenset(s) for s in label_sets.values()}
    if len(distinct) <= 1:
        return None
    source = Disagreement(
        clip_id=task.clip_id,
        task_id=task.pk,
        task_priority=task.priority,
        n_label_sets=len(distinct),
    )
    return task_enqueue(project=task.project, sources=[source]).task_id(source)
