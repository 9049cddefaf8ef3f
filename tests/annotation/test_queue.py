"""The work queue: priority, overlap, leases, clip-once, blind mode, submission rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Annotation, AnnotationLabel, Assignment, Project, Task
from annotation.services import tasks as queue
from annotation.services.enqueue import Manual, task_enqueue
from tests.factories import ClipFactory, make_taxonomy_version

pytestmark = pytest.mark.django_db


def orm_queue(
    *, project: Project, user: AbstractBaseUser, kinds: Sequence[str], now: datetime
) -> Iterable[Task]:
    """The queue as a queryset: the readable definition that ``_lock_next_candidate`` writes out."""
    live_holders = Subquery(
        Assignment.objects.filter(
            task=OuterRef("pk"), status=Assignment.Status.ACTIVE, lease_expires_at__gt=now
        )
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")[:1]
    )
    # Any assignment (whatever its state) of this user on any task of the same clip: a clip is
    # offered once per user, so a relabel reaches someone who has not heard it yet.
    seen_clip = Assignment.objects.filter(user=user, task__clip_id=OuterRef("clip_id"))
    labelled_clip = Annotation.objects.filter(user=user, clip_id=OuterRef("clip_id"))
    return (
        Task.objects.filter(project=project, status=Task.Status.OPEN, kind__in=list(kinds))
        .alias(held=Coalesce(live_holders, Value(0)))
        .filter(n_submitted__lt=F("overlap") - F("held"))
        .filter(~Exists(seen_clip), ~Exists(labelled_clip))
        .select_related("clip")
        .order_by("-priority", "pk")
    )


def _tasks(project, n, *, kind=Task.Kind.LABEL, priority=0.0, overlap=1):
    out = []
    for _ in range(n):
        clip = ClipFactory(project=project)
        out.append(
            Task.objects.create(
                project=project, clip=clip, kind=kind, priority=priority, overlap=overlap
            )
        )
    return out


def _next(team, who, **kw):
    return queue.task_next_for_annotator(project_id=team["project"].pk, user=team[who], **kw)


def _submit(team, who, task, labels=("Rock/Punk",), **kw):
    return queue.annotation_submit(task_id=task.pk, user=team[who], labels=list(labels), **kw)


def test_highest_priority_first_then_oldest(team):
    low, high, high2 = (
        _tasks(team["project"], 1, priority=0)[0],
        *_tasks(team["project"], 2, priority=5),
    )
    assert _next(team, "ann").task == high
    assert _next(team, "ann2").task == high2
    assert _next(team, "ann3").task == low


def test_hand_written_take_agrees_with_the_queryset(team):
    """The queue's locking statement is SQL written out for speed; the ORM queryset says what it
    means. Walk both, best first, over a mixed queue: kinds, overlaps, live and lapsed leases, a
    clip already offered, a clip already labelled, finished tasks, exclusions."""
    import random

    project, rng = team["project"], random.Random(3)
    now = timezone.now()
    tasks = []
    for i in range(40):
        clip = ClipFactory(
            project=project, duration_s=30.0 + i, segment_start_s=i, segment_end_s=i + 5
        )
        for kind in rng.sample(list(Task.Kind.values), rng.choice([1, 1, 2])):
            tasks.append(
                Task.objects.create(
                    project=project,
                    clip=clip,
                    kind=kind,
                    priority=rng.choice([0.0, 1.0, 2.5]) if i % 3 else float(i),
                    overlap=rng.choice([1, 2, 3]),
                    n_submitted=rng.choice([0, 0, 1]),
                    status=Task.Status.DONE if i % 11 == 0 else Task.Status.OPEN,
                )
            )
    users = [team[u] for u in ("ann", "ann2", "ann3", "reviewer")]
    for t in rng.sample(tasks, 25):
        user = rng.choice(users)
        if Assignment.objects.filter(task=t, user=user).exists():
            continue
        lapsed = rng.random() < 0.4
        Assignment.objects.create(
            task=t,
            user=user,
            lease_expires_at=now + timedelta(seconds=-5 if lapsed else 600),
            status=rng.choice([Assignment.Status.ACTIVE, Assignment.Status.SUBMITTED]),
        )
    version = project.taxonomy_version
    for t in rng.sample(tasks, 6):
        Annotation.objects.create(
            clip=t.clip, taxonomy_version=version, user=rng.choice(users), source="user:x"
        )

    for user in users:
        for kinds in (queue.LABELLING_KINDS, (Task.Kind.REVIEW,)):
            for skip in ([], [t.pk for t in rng.sample(tasks, 5)]):
                expected = [
                    t.pk
                    for t in orm_queue(project=project, user=user, kinds=kinds, now=now)
                    if t.pk not in skip
                ]
                walked, taken = list(skip), []
                while (
                    t := queue._lock_next_candidate(
                        project=project, user=user, kinds=kinds, now=now, skip=walked
                    )
                ) is not None:
                    stored = Task.objects.select_related("clip").get(pk=t.pk)
                    for col in queue._TASK_COLUMNS:
                        assert getattr(t, col) == getattr(stored, col), col
                    for col in queue._CLIP_COLUMNS:
                        assert getattr(t.clip, col) == getattr(stored.clip, col), col
                    walked.append(t.pk)
                    taken.append(t.pk)
                assert taken == expected, (user, kinds, skip)
                assert expected or kinds == (Task.Kind.REVIEW,)


def test_held_task_comes_back_and_prefetch_takes_a_second(team):
    _t1, _t2, _t3 = _tasks(team["project"], 3)
    a = _next(team, "ann")
    assert _next(team, "ann").pk == a.pk  # reload: same task
    b = _next(team, "ann", exclude_task_ids=[a.task_id])
    assert b.task_id != a.task_id
    # Two held is the most: a third request with both excluded gets nothing.
    assert _next(team, "ann", exclude_task_ids=[a.task_id, b.task_id]) is None


def test_overlap_gives_a_clip_to_k_distinct_annotators(team):
    (task,) = _tasks(team["project"], 1, overlap=2)
    a1 = _next(team, "ann")
    a2 = _next(team, "ann2")
    assert a1.task_id == a2.task_id == task.pk
    assert _next(team, "ann3") is None  # both slots held
    _submit(team, "ann", task)
    _submit(team, "ann2", task, labels=("Rock/Punk",))
    task.refresh_from_db()
    assert (task.status, task.n_submitted) == (Task.Status.DONE, 2)
    assert _next(team, "ann3") is None


def test_expired_lease_returns_the_slot_and_is_refused_at_submit(team):
    (task,) = _tasks(team["project"], 1)
    a = _next(team, "ann")
    later = timezone.now() + timedelta(seconds=team["project"].lease_seconds + 1)
    b = queue.task_next_for_annotator(project_id=team["project"].pk, user=team["ann2"], now=later)
    assert b is not None and b.task_id == task.pk
    a.refresh_from_db()
    assert a.status == Assignment.Status.EXPIRED  # marked lazily when the slot was taken
    with pytest.raises(queue.LeaseExpired):
        _submit(team, "ann", task)
    assert not Annotation.objects.exists()


def test_periodic_expiry_marks_lapsed_leases(team):
    _tasks(team["project"], 2)
    _next(team, "ann")
    _next(team, "ann2")
    later = timezone.now() + timedelta(seconds=team["project"].lease_seconds + 1)
    assert queue.assignments_expire(now=later) == 2
    assert queue.assignments_expire(now=later) == 0


def test_renew_extends_the_lease(team):
    (task,) = _tasks(team["project"], 1)
    a = _next(team, "ann")
    renewed = queue.assignment_renew(
        task_id=task.pk, user=team["ann"], now=a.lease_expires_at - timedelta(seconds=1)
    )
    assert renewed.lease_expires_at > a.lease_expires_at


def test_skip_returns_the_slot_and_never_offers_the_clip_again(team):
    (task,) = _tasks(team["project"], 1)
    _next(team, "ann")
    queue.assignment_skip(task_id=task.pk, user=team["ann"])
    queue.assignment_skip(task_id=task.pk, user=team["ann"])  # idempotent
    assert _next(team, "ann") is None
    assert _next(team, "ann2").task_id == task.pk


def test_relabel_never_goes_to_someone_who_labelled_the_clip(team):
    (task,) = _tasks(team["project"], 1)
    _next(team, "ann")
    _submit(team, "ann", task)
    relabel = Task.objects.create(
        project=team["project"],
        clip=task.clip,
        kind=Task.Kind.RELABEL,
        priority=9,
        reason="label_issue:wrong_sibling",
    )
    assert _next(team, "ann") is None
    got = _next(team, "ann2")
    assert got.task_id == relabel.pk and got.task.reason == "label_issue:wrong_sibling"


def test_annotators_do_not_get_review_tasks_and_reviewers_do(team):
    (review,) = _tasks(team["project"], 1, kind=Task.Kind.REVIEW)
    assert _next(team, "ann") is None
    got = _next(team, "reviewer", kinds=(Task.Kind.REVIEW,))
    assert got.task_id == review.pk


def test_outsider_gets_not_found(team):
    _tasks(team["project"], 1)
    with pytest.raises(queue.TaskNotFound):
        _next(team, "outsider")


def test_submit_closes_ancestors_and_is_idempotent(team):
    (task,) = _tasks(team["project"], 1)
    _next(team, "ann")
    first = _submit(team, "ann", task, labels=("Rock/Punk", "Jazz/Bebop"), idempotency_key="k1")
    again = _submit(team, "ann", task, labels=("Rock/Punk", "Jazz/Bebop"), idempotency_key="k1")
    assert first.created and not again.created
    assert first.annotation.pk == again.annotation.pk
    assert Annotation.objects.count() == 1
    keys = dict(
        AnnotationLabel.objects.filter(annotation=first.annotation).values_list(
            "node__key", "explicit"
        )
    )
    assert keys == {"Rock": False, "Rock/Punk": True, "Jazz": False, "Jazz/Bebop": True}
    task.refresh_from_db()
    assert task.n_submitted == 1 and task.status == Task.Status.DONE


def test_second_submit_without_key_is_refused(team):
    (task,) = _tasks(team["project"], 1)
    _next(team, "ann")
    _submit(team, "ann", task)
    with pytest.raises(queue.AlreadySubmitted):
        _submit(team, "ann", task)


def test_reused_key_on_another_task_is_refused(team):
    _t1, _t2 = _tasks(team["project"], 2)
    a = _next(team, "ann")
    b = _next(team, "ann", exclude_task_ids=[a.task_id])
    _submit(team, "ann", a.task, idempotency_key="same")
    with pytest.raises(queue.IdempotencyConflict):
        _submit(team, "ann", b.task, idempotency_key="same")
    b.refresh_from_db()
    assert b.status == Assignment.Status.ACTIVE


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"labels": ["Rock/Polka"]}, queue.InvalidLabels),
        ({"labels": []}, queue.InvalidLabels),
        ({"note": "x" * 2001}, queue.InvalidLabels),
        ({"taxonomy_version_id": -1}, queue.TaxonomyVersionMismatch),
    ],
)
def test_bad_submissions_write_nothing(team, kwargs, error):
    (task,) = _tasks(team["project"], 1)
    a = _next(team, "ann")
    args = {"labels": ["Rock/Punk"], **kwargs}
    with pytest.raises(error):
        queue.annotation_submit(task_id=task.pk, user=team["ann"], **args)
    a.refresh_from_db()
    task.refresh_from_db()
    assert a.status == Assignment.Status.ACTIVE and task.n_submitted == 0
    assert not Annotation.objects.exists() and not AnnotationLabel.objects.exists()


def test_labels_of_another_taxonomy_version_are_refused(team):
    other = make_taxonomy_version(("Folk/Polka",), name="Other genres")
    (task,) = _tasks(team["project"], 1)
    _next(team, "ann")
    with pytest.raises(queue.InvalidLabels, match="Folk/Polka"):
        _submit(team, "ann", task, labels=("Folk/Polka",))
    with pytest.raises(queue.TaxonomyVersionMismatch):
        _submit(team, "ann", task, taxonomy_version_id=other.pk)


def test_task_of_another_project_is_not_found(team):
    from tests.factories import ProjectFactory

    foreign = ProjectFactory()
    (task,) = _tasks(foreign, 1)
    with pytest.raises(queue.TaskNotFound):
        _submit(team, "ann", task)


def test_disagreement_on_a_multi_annotator_task_queues_a_review(team):
    (task,) = _tasks(team["project"], 1, overlap=2)
    _next(team, "ann")
    _next(team, "ann2")
    _submit(team, "ann", task, labels=("Rock/Punk",))
    _submit(team, "ann2", task, labels=("Rock/Metal",))
    review = Task.objects.get(kind=Task.Kind.REVIEW)
    assert review.clip_id == task.clip_id and review.reason == "disagreement"


def test_enqueue_manual_is_idempotent(team):
    clips = [ClipFactory(project=team["project"]) for _ in range(3)]
    sources = Manual.for_clips([c.pk for c in clips])
    assert len(task_enqueue(project=team["project"], sources=sources).created) == 3
    again = task_enqueue(project=team["project"], sources=sources)
    assert not again.created and len(again.task_ids) == 3
    assert Task.objects.filter(project=team["project"]).count() == 3
