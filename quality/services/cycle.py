"""The relabel cycle: retrain (K-fold) -> detect -> route -> acquire, one checkpointed row.

Two ways to run it, sharing the step functions and the checkpoints:

* on workers (``quality.tasks.run_quality_cycle``): :func:`cycle_begin` claims the cycle and the
  task replaces itself with a Celery chain of one task per step left, each routed to its own queue
  (``settings.REFRAIN_CYCLE_STEP_QUEUES``: the retrain goes to ``gpu``, detection to ``cpu``). The
  chain's last task inherits the trigger's task id, so the caller's ``AsyncResult.get()`` still
  returns the summary once the whole cycle finished;
* in one process (:func:`cycle_run`: ``manage.py run_cycle``, the tests).

Each step commits its writes and then its checkpoint (``QualityCycle.steps_done``); every step is
idempotent on its own (one model version per cycle, trained again if its worker died; a run that is
the cycle's one-to-one row; tasks keyed ``issue:<id>`` and ``al:...``), so a worker killed anywhere
leaves a cycle that the next trigger (or the orphan sweep, ``quality.services.sweep``) resumes,
creating no duplicate model, task or issue. While a worker is inside a step the cycle records it and
its heartbeat (``refrain.jobs``); the checkpoint releases it.

Who may run a step: a PostgreSQL session-level advisory lock per project is held by the worker
inside one of its cycle's steps (or running a whole cycle in process). The server releases it when
that worker's connection dies (SIGKILL included), so a step that takes the lock and finds the
training of a previous attempt still marked running knows it is an orphan. A trigger that finds the
lock held answers "already running"; a step that finds it held is retried later. SQLite (the
embedded setup) has no such lock and one writer at a time; there the latest unfinished cycle is
resumed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from active_learning.models import JobStatus, ModelVersion
from active_learning.selectors import PATCH_BACKEND
from active_learning.services.acquisition import acquire_batch
from active_learning.services.features import feature_set_extract_sync
from active_learning.services.training import (
    model_version_claim,
    model_version_request,
    model_version_requeue,
    model_version_run,
    model_version_summary,
)
from annotation.models import Annotation, Project
from quality.dashboards.snapshots import dashboards_refresh_request
from quality.models import ACTIVE_STATUSES, QualityCycle, QualityRun, RunStatus
from quality.selectors import latest_done_model, relabel_evidence
from quality.services.consensus import annotation_consensus_update, consensus_recompute_project
from quality.services.detection import (
    quality_run_create,
    quality_run_execute,
    quality_run_requeue,
    quality_run_summary,
)
from quality.services.routing import issues_route
from quality.services.summary import clip_summaries_refresh
from refrain.errors import Conflict
from refrain.jobs import fault_point, heartbeat, holder_fields, sweep_note

logger = logging.getLogger(__name__)

#: First key of the advisory lock pair; the second is the project id.
CYCLE_LOCK_NAMESPACE = 0x52_46_51_43  # "RFQC"


class CycleBusy(Conflict):
    """A live worker is running this project's cycle."""

    def __init__(self, cycle: QualityCycle | None) -> None:
        super().__init__(f"a relabel cycle is already running ({cycle})")
        self.cycle = cycle


@contextmanager
def cycle_lock(project_id: int) -> Iterator[bool]:
    """Hold the project's cycle lock for the block; yields False if another session holds it."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", [CYCLE_LOCK_NAMESPACE, project_id])
        got = bool(cur.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", [CYCLE_LOCK_NAMESPACE, project_id])


def _n_annotations(project: Project) -> int:
    return Annotation.objects.filter(clip__project=project).exclude(kind="review").count()


def cycle_request(*, project: Project, trigger: str = QualityCycle.Trigger.MANUAL) -> QualityCycle:
    """The project's unfinished cycle, or a new queued one (the partial unique index keeps one)."""
    active = QualityCycle.objects.filter(project=project, status__in=ACTIVE_STATUSES).first()
    if active is not None:
        return active
    try:
        with transaction.atomic():
            return QualityCycle.objects.create(
                project=project, trigger=trigger, n_annotations_at_start=_n_annotations(project)
            )
    except IntegrityError:  # a concurrent trigger created it first
        return QualityCycle.objects.get(project=project, status__in=ACTIVE_STATUSES)


def cycle_enqueue(
    *, project: Project, trigger: str = QualityCycle.Trigger.MANUAL
) -> tuple[QualityCycle, bool]:
    """Start the project's cycle on the workers now (the dashboard button, the API).

    Returns the cycle and whether it is new. An unfinished cycle is not duplicated: its trigger is
    sent again, which resumes it if its worker died and answers "already running" if one is inside
    a step (steps already done are skipped either way).
    """
    # quality.tasks imports this module (its tasks call these services).
    from quality.tasks import run_quality_cycle

    active = QualityCycle.objects.filter(project=project, status__in=ACTIVE_STATUSES).first()
    cycle = active or cycle_request(project=project, trigger=trigger)
    run_quality_cycle.delay_on_commit(project.id, trigger=trigger, cycle_id=cycle.pk)
    return cycle, active is None


def cycle_start_if_due(*, project: Project) -> QualityCycle | None:
    """Queue a cycle after ``retrain_every`` new annotations since the last one started; None if
    not due or one is already queued or running."""
    from quality.tasks import run_quality_cycle  # (imports this module: see cycle_enqueue)

    every = project.loop_policy.retrain_every
    if every <= 0:
        return None
    if QualityCycle.objects.filter(project=project, status__in=ACTIVE_STATUSES).exists():
        return None
    last = QualityCycle.objects.filter(project=project).order_by("-created_at").first()
    since = _n_annotations(project) - (last.n_annotations_at_start if last else 0)
    if since < every:
        return None
    try:
        with transaction.atomic():
            cycle = QualityCycle.objects.create(
                project=project,
                trigger=QualityCycle.Trigger.ANNOTATIONS,
                n_annotations_at_start=_n_annotations(project),
            )
    except IntegrityError:
        return None
    run_quality_cycle.delay_on_commit(
        project.id, trigger=QualityCycle.Trigger.ANNOTATIONS, cycle_id=cycle.pk
    )
    return cycle


def annotation_settle(*, annotation: Annotation) -> dict[str, object]:
    """Everything a new annotation sets off: the clip's consensus and the issue it answers
    (:func:`quality.services.consensus.annotation_consensus_update`), then the "after N new
    annotations" trigger of the relabel cycle. Safe to run twice."""
    out = annotation_consensus_update(annotation=annotation)
    clip_summaries_refresh(project=annotation.clip.project, clip_ids=[annotation.clip_id])
    cycle = cycle_start_if_due(project=annotation.clip.project)
    return {**out, "cycle_started": cycle.pk if cycle else None}


# --- steps ----------------------------------------------------------------------------------------


def _step_retrain(cycle: QualityCycle) -> dict[str, Any]:
    project = cycle.project
    out: dict[str, Any] = {}
    # Features of the project's backend over every ready clip: a no-op when they are up to date;
    # after an import or a backend change, a new set (rows already embedded the same way are copied).
    kind = project.loop_policy.model_kind
    backends = {"features": None, **({"patches": PATCH_BACKEND} if kind == "cnn" else {})}
    for key, backend in backends.items():
        fs = feature_set_extract_sync(project=project, backend=backend)
        out[key] = {
            "feature_set": fs.pk,
            "backend": fs.backend,
            "status": fs.status,
            "clips": fs.n_clips,
            "failed": fs.n_failed,
        }
    # One version per cycle, keyed by the cycle (and the attempt that asked for it). A resumed
    # cycle finds the version of an earlier attempt: done (the worker died before the checkpoint),
    # it is used as it is; running, its worker died inside this step (we hold the project's cycle
    # lock), so the same version is trained again; only a failed one is replaced by a new one.
    prefix = f"quality-cycle:{cycle.pk}:"
    mv = ModelVersion.objects.filter(task_id__startswith=prefix).order_by("-id").first()
    if mv is not None and mv.status == JobStatus.RUNNING:
        model_version_requeue(
            model_version=mv,
            action="resumed",
            reason=f"worker {mv.worker} (pid {mv.worker_pid}) lost; the relabel cycle resumed it",
        )
        mv.refresh_from_db()
    if mv is None or mv.status == JobStatus.FAILED:
        mv = model_version_request(
            project=project,
            trigger=ModelVersion.Trigger.CYCLE,
            kind=kind,
            task_id=f"{prefix}{cycle.attempts}",
        )
    if model_version_claim(model_version=mv):
        mv = model_version_run(model_version=mv)
    out["model"] = model_version_summary(model_version=mv)
    if mv.status == JobStatus.DONE:
        QualityCycle.objects.filter(pk=cycle.pk).update(model_version=mv)
        cycle.model_version = mv
    return out


def _step_detect(cycle: QualityCycle) -> dict[str, Any]:
    project = cycle.project
    mv = cycle.model_version or latest_done_model(project=project)
    run = quality_run_create(project=project, model_version=mv, cycle=cycle)
    if run.status == RunStatus.RUNNING:
        # Its worker died (we hold the project's cycle lock): detection wrote nothing, redo it.
        quality_run_requeue(
            run=run,
            action="resumed",
            reason=f"worker {run.worker} (pid {run.worker_pid}) lost; the relabel cycle resumed it",
        )
    run = quality_run_execute(run=run)
    consensus = consensus_recompute_project(project=project, model_version=mv)
    # New issues, a new model's predictions, a project-wide consensus: every explorer row moves.
    n_summaries = clip_summaries_refresh(project=project)
    return {**quality_run_summary(run), "consensus": consensus, "summaries": n_summaries}


def _step_route(cycle: QualityCycle) -> dict[str, Any]:
    return issues_route(run=QualityRun.objects.get(cycle=cycle))


def _step_acquire(cycle: QualityCycle) -> dict[str, Any]:
    result = acquire_batch(
        project=cycle.project,
        model_version=cycle.model_version,
        seed=cycle.pk,
        context={"cycle": cycle.pk, "model_version": cycle.model_version_id},
        evidence=relabel_evidence(project=cycle.project),
    )
    summary = result.as_dict()
    summary["picked"] = summary["picked"][:200]  # the tasks themselves carry the full record
    return summary


STEPS = {
    "retrain": _step_retrain,
    "detect": _step_detect,
    "route": _step_route,
    "acquire": _step_acquire,
}
#: Steps whose writes are small enough to commit together with their checkpoint.
ATOMIC_STEPS = {"route", "acquire"}


def _result_line(result: Any) -> str:
    """A step's result in one line for the job log: its numbers and short texts."""
    if not isinstance(result, dict):
        return str(result)[:200]
    parts = [
        f"{k}={v}"
        for k, v in result.items()
        if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 60)
    ]
    return ", ".join(parts)[:300] or "ok"


def _checkpoint(cycle: QualityCycle, step: str, result: dict[str, Any]) -> None:
    """Commit a step's result and release the cycle (no worker: between steps)."""
    cycle.results = {**cycle.results, step: result}
    cycle.steps_done = [*cycle.steps_done, step]
    cycle.worker, cycle.worker_pid, cycle.heartbeat_at = "", None, timezone.now()
    QualityCycle.objects.filter(pk=cycle.pk).update(
        results=cycle.results,
        steps_done=cycle.steps_done,
        worker="",
        worker_pid=None,
        heartbeat_at=cycle.heartbeat_at,
    )


def _take_over(cycle: QualityCycle, step: str) -> QualityCycle:
    """Record this worker as the one inside ``step``. The caller holds the project's cycle lock.

    A worker still recorded means the previous one died inside a step without releasing the cycle
    (a requeued message after its pool child was killed): that counts as an attempt, and past
    ``REFRAIN_JOB_MAX_ATTEMPTS`` the cycle fails with the reason instead of trying once more.
    """
    now = timezone.now()
    updates: dict[str, Any] = holder_fields(now=now)
    if cycle.worker:
        lost = f"worker {cycle.worker} (pid {cycle.worker_pid}) lost inside a step"
        if cycle.attempts >= settings.REFRAIN_JOB_MAX_ATTEMPTS:
            reason = f"{lost} {cycle.attempts} time(s); giving up at {step}"
            QualityCycle.objects.filter(pk=cycle.pk).update(
                status=RunStatus.FAILED,
                error=reason,
                finished_at=now,
                worker="",
                worker_pid=None,
                sweep_notes=[*cycle.sweep_notes, sweep_note("failed", reason, now=now)],
            )
            cycle.refresh_from_db()
            return cycle
        updates["attempts"] = F("attempts") + 1
        updates["sweep_notes"] = [
            *cycle.sweep_notes,
            sweep_note("resumed", f"{lost}; {step} redelivered and resumed", now=now),
        ]
    QualityCycle.objects.filter(pk=cycle.pk).update(**updates)
    cycle.refresh_from_db()
    return cycle


def _cycle_claim(*, project: Project, trigger: str, cycle_id: int | None) -> QualityCycle:
    """The cycle to (re)start, marked running with one more attempt; a finished one as it is.

    The caller holds the project's cycle lock.
    """
    cycle = None
    if cycle_id is not None:
        cycle = QualityCycle.objects.filter(pk=cycle_id, project=project).first()
        if cycle is not None and cycle.status not in ACTIVE_STATUSES:
            return cycle  # a redelivered message for a finished cycle
    if cycle is None:
        cycle = cycle_request(project=project, trigger=trigger)
    now = timezone.now()
    # Under the lock, so whoever was inside a step of it is dead: nobody holds it until a step
    # starts (heartbeat_at: since when it waits for that step).
    QualityCycle.objects.filter(pk=cycle.pk).update(
        status=RunStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=cycle.started_at or now,
        error="",
        worker="",
        worker_pid=None,
        heartbeat_at=now,
    )
    cycle.refresh_from_db()
    return cycle


def _busy(project_id: int) -> CycleBusy:
    return CycleBusy(
        QualityCycle.objects.filter(project_id=project_id, status__in=ACTIVE_STATUSES).first()
    )


def cycle_step_run(*, cycle: QualityCycle, step: str, finish: bool = False) -> QualityCycle:
    """Run one step of a running cycle unless it is done already; ``finish`` then closes the cycle.

    The caller holds the project's cycle lock. A cycle that is no longer running (finished, or
    failed in another step) is returned untouched, so a redelivered or duplicated step is a no-op.
    A step that raises marks the cycle failed, with the error, and re-raises.
    """
    if step not in STEPS:
        raise ValueError(f"unknown cycle step {step!r}; steps are {', '.join(STEPS)}")
    if cycle.status not in ACTIVE_STATUSES:
        return cycle
    try:
        if step not in cycle.steps_done:
            cycle = _take_over(cycle, step)
            if cycle.status not in ACTIVE_STATUSES:
                return cycle
            with heartbeat(QualityCycle, cycle.pk):
                logger.info("cycle %s: %s", cycle.pk, step)
                if step in ATOMIC_STEPS:
                    with transaction.atomic():
                        result = STEPS[step](cycle)
                        fault_point(f"cycle.{step}")
                        _checkpoint(cycle, step, result)
                else:
                    result = STEPS[step](cycle)
                    fault_point(f"cycle.{step}")
                    _checkpoint(cycle, step, result)
                logger.info("cycle %s: %s done: %s", cycle.pk, step, _result_line(result))
    except Exception as exc:
        logger.exception("cycle %s failed in %s", cycle.pk, step)
        QualityCycle.objects.filter(pk=cycle.pk).update(
            status=RunStatus.FAILED,
            error=f"{step}: {exc!r}"[:4000],
            finished_at=timezone.now(),
            worker="",
            worker_pid=None,
        )
        raise
    if finish:
        QualityCycle.objects.filter(pk=cycle.pk, status__in=ACTIVE_STATUSES).update(
            status=RunStatus.DONE, finished_at=timezone.now()
        )
        cycle.refresh_from_db()
        if cycle.status == RunStatus.DONE:
            # The console's snapshots show what the cycle changed (on a worker, after the commit).
            dashboards_refresh_request(project=cycle.project, force=True)
    return cycle


def cycle_run(
    *,
    project: Project,
    trigger: str = QualityCycle.Trigger.MANUAL,
    cycle_id: int | None = None,
    steps: tuple[str, ...] = QualityCycle.STEPS,
) -> QualityCycle:
    """Run (or resume) the project's cycle to the end, in this process, holding its lock throughout.

    Raises
    ------
    CycleBusy
        When a live worker holds the project's cycle lock.
    """
    with cycle_lock(project.pk) as got:
        if not got:
            raise _busy(project.pk)
        cycle = _cycle_claim(project=project, trigger=trigger, cycle_id=cycle_id)
        for i, step in enumerate(steps):
            cycle = cycle_step_run(cycle=cycle, step=step, finish=i == len(steps) - 1)
        return cycle


def cycle_begin(
    *, project: Project, trigger: str = QualityCycle.Trigger.MANUAL, cycle_id: int | None = None
) -> tuple[QualityCycle, list[str]]:
    """Claim the project's cycle for a run of one task per step: the cycle and the steps left.

    The lock is held only while claiming; each step takes it again (:func:`cycle_step_execute`).
    When the lock is free but a cycle is marked running, either its worker died or its next step
    is still queued; both are safe to (re)start, since a step already done is skipped. The last
    step is always in the list: it is the one that closes the cycle.

    Raises
    ------
    CycleBusy
        When a live worker is inside one of the cycle's steps.
    """
    with cycle_lock(project.pk) as got:
        if not got:
            raise _busy(project.pk)
        cycle = _cycle_claim(project=project, trigger=trigger, cycle_id=cycle_id)
    if cycle.status not in ACTIVE_STATUSES:
        return cycle, []
    left = [s for s in QualityCycle.STEPS if s not in cycle.steps_done]
    return cycle, left or [QualityCycle.STEPS[-1]]


def cycle_step_execute(*, cycle_id: int, step: str, finish: bool = False) -> QualityCycle:
    """One step of a cycle as its own unit of work (a Celery task), under the project's lock.

    Raises
    ------
    CycleBusy
        When another live worker holds the lock (it is inside another step of this cycle, or a
        whole in-process cycle): try again later.
    """
    cycle = QualityCycle.objects.select_related("project").get(pk=cycle_id)
    with cycle_lock(cycle.project_id) as got:
        if not got:
            raise _busy(cycle.project_id)
        cycle.refresh_from_db()
        return cycle_step_run(cycle=cycle, step=step, finish=finish)


def cycle_summary(cycle: QualityCycle) -> dict[str, Any]:
    """The JSON the task returns and the command prints."""
    return {
        "cycle": cycle.pk,
        "project": cycle.project_id,
        "trigger": cycle.trigger,
        "status": cycle.status,
        "attempts": cycle.attempts,
        "steps_done": cycle.steps_done,
        "model_version": cycle.model_version_id,
        "results": cycle.results,
        "error": cycle.error,
        "started_at": cycle.started_at.isoformat() if cycle.started_at else None,
        "finished_at": cycle.finished_at.isoformat() if cycle.finished_at else None,
    }
