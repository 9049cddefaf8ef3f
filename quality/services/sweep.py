"""The orphan sweep: find job rows whose worker is gone and resume them, or fail them with a reason.

Run every minute by beat (``quality.tasks.sweep_orphans``) and once by ``manage.py sweep_orphans``.
Five kinds of rows: relabel cycles, standalone detection runs, feature sets, trainings (a cycle's
own detection run and model version are resumed by the cycle's own step, under its lock) and clip
imports.

* **held**: ``running`` with a worker recorded, and a heartbeat older than
  ``REFRAIN_JOB_STALE_SECONDS``. Before resuming, the sweep asks the worker (Celery remote control,
  ``inspect().active()`` of that node name): a node that answers with a task running in that pid
  still holds the job (a step stuck in C code cannot beat); no answer, or the pid gone (its pool
  child was killed and replaced), means orphaned. Without a broker that answers (the filesystem
  transport) the heartbeat's age alone decides.
* **waiting**: ``queued``, or a cycle ``running`` between steps, untouched for
  ``REFRAIN_JOB_QUEUED_STALE_SECONDS``: its message was lost (or no worker consumes its queue), so
  it is sent again. A duplicate message is harmless: every job is claimed by a conditional UPDATE.

Resuming re-queues the row (a conditional UPDATE on the row as the sweep saw it: of two sweeps
running at once only one wins, and a row that moved meanwhile is left alone), notes why in
``sweep_notes`` and sends its message again: a cycle resumes from its next step (checkpoints), a
feature set extracts its missing chunks, a training trains the same version, a run detects again
(its issues commit atomically with its "done"), an import skips the items its committed chunks
accounted for and imports the rest (an upload cannot be read again: it is failed). A job that already had ``REFRAIN_JOB_MAX_ATTEMPTS``
attempts (or re-sends) is failed with the reason instead.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from django.utils import timezone

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import Annotation, AnnotationLabel, ImportJob
from annotation.services.clips import (
    import_job_resumable,
)
from quality.models import ACTIVE_STATUSES, ClipConsensus, QualityCycle, QualityRun, RunStatus
from quality.services.cycle import annotation_settle
from quality.services.jobs import job_resend
from refrain.celery import app
from refrain.jobs import PROCESS_PREFIX, sweep_note

logger = logging.getLogger(__name__)

#: Seconds to wait for one node's answer to ``inspect().active()``.
INSPECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class SweepAction:
    kind: str  # cycle | run | features | training | import | consensus
    id: int
    action: str  # resumed | resent | failed | recomputed
    reason: str


class WorkerProbe:
    """Is a worker still running a job? Asks each Celery node once per sweep."""

    def __init__(self, *, ask: bool) -> None:
        self.ask = ask and not settings.CELERY_BROKER_URL.startswith(("filesystem://", "memory://"))
        self._active: dict[str, dict[str, Any] | None] = {}

    def _node_active(self, node: str) -> dict[str, Any] | None:
        if node not in self._active:
            try:
                replies = app.control.inspect(
                    destination=[node], timeout=INSPECT_TIMEOUT_S
                ).active()
            except Exception:  # the broker is down: nothing to ask, the heartbeat decides
                logger.warning("sweep: could not ask worker %s", node, exc_info=True)
                replies = None
            self._active[node] = replies
        return self._active[node]

    def holds(self, *, worker: str, pid: int | None) -> tuple[bool, str]:
        """(still running it, why we think so) for a row's recorded worker."""
        if not worker:
            return False, "no worker recorded"
        if worker.startswith(PROCESS_PREFIX):
            host = worker.removeprefix(PROCESS_PREFIX)
            if host == socket.gethostname() and pid:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return False, f"process {pid} on {host} is gone"
                except PermissionError:
                    pass
                return True, f"process {pid} on {host} is alive"
            return False, f"{worker} (pid {pid}) cannot be asked; its heartbeat stopped"
        if not self.ask:
            return (
                False,
                f"worker {worker} cannot be asked (no broker to ask); its heartbeat stopped",
            )
        replies = self._node_active(worker)
        if not replies or worker not in replies:
            return False, f"worker {worker} does not answer"
        pids = {t.get("worker_pid") for t in replies[worker] or []}
        if pid is not None and pid in pids:
            return True, f"worker {worker} still runs a task in pid {pid}"
        return False, f"worker {worker} answers but pid {pid} runs nothing (its process died)"


def _age(now: datetime, then: datetime | None) -> str:
    return "never" if then is None else f"{(now - then).total_seconds():.0f} s ago"


def _stale_held(
    qs: QuerySet[Any], cutoff: datetime, running: str, created: str = "created_at"
) -> QuerySet[Any]:
    return qs.filter(status=running).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, **{f"{created}__lt": cutoff})
    )


def _fail(model: type[Model], row: Any, reason: str, now: datetime, failed: str) -> bool:
    """Conditional on the row as seen, like a resume."""
    return bool(
        model._default_manager.filter(
            pk=row.pk, status=row.status, worker=row.worker, heartbeat_at=row.heartbeat_at
        ).update(
            status=failed,
            error=reason[:4000],
            finished_at=now,
            worker="",
            worker_pid=None,
            sweep_notes=[*row.sweep_notes, sweep_note("failed", reason, now=now)],
        )
    )


def _tries(row: Any) -> int:
    return max(int(row.attempts), len(row.sweep_notes))


def _give_up(
    model: type[Model], row: Any, *, kind: str, reason: str, now: datetime, limit: int, failed: str
) -> list[SweepAction] | None:
    """None while ``row`` may still be resumed; past ``limit`` tries it is failed with the reason
    (the action, or nothing when another sweep got there first)."""
    if _tries(row) < limit:
        return None
    reason = f"{reason}; gave up after {_tries(row)} attempt(s)"
    return (
        [SweepAction(kind, row.pk, "failed", reason)]
        if _fail(model, row, reason, now, failed)
        else []
    )


def orphans_sweep(
    *,
    now: datetime | None = None,
    stale_seconds: float | None = None,
    queued_stale_seconds: float | None = None,
    max_attempts: int | None = None,
    ask_workers: bool = True,
) -> list[SweepAction]:
    """Resume (or fail) every orphaned job; returns what it did. Idempotent and safe to run twice
    at once. Messages are sent once the caller's transaction (if any) commits."""
    now = now or timezone.now()
    held_cutoff = now - timedelta(
        seconds=settings.REFRAIN_JOB_STALE_SECONDS if stale_seconds is None else stale_seconds
    )
    wait_cutoff = now - timedelta(
        seconds=settings.REFRAIN_JOB_QUEUED_STALE_SECONDS
        if queued_stale_seconds is None
        else queued_stale_seconds
    )
    limit = settings.REFRAIN_JOB_MAX_ATTEMPTS if max_attempts is None else max_attempts
    probe = WorkerProbe(ask=ask_workers)
    done: list[SweepAction] = []
    done += _sweep_cycles(now, held_cutoff, wait_cutoff, limit, probe)
    done += _sweep_cycle_leftovers(now)
    done += _sweep_runs(now, held_cutoff, wait_cutoff, limit, probe)
    done += _sweep_feature_sets(now, held_cutoff, wait_cutoff, limit, probe)
    done += _sweep_trainings(now, held_cutoff, wait_cutoff, limit, probe)
    done += _sweep_imports(now, held_cutoff, wait_cutoff, limit, probe)
    done += _sweep_consensus(now)
    for a in done:
        logger.warning("sweep: %s %s %s: %s", a.action, a.kind, a.id, a.reason)
    return done


def _orphans(
    qs: QuerySet[Any],
    *,
    running: str,
    held_cutoff: datetime,
    wait_cutoff: datetime,
    probe: WorkerProbe,
    now: datetime,
    queued: str,
    created: str = "created_at",
) -> list[tuple[Any, str, str]]:
    """(row, action "resumed" | "resent", reason) for the held rows whose worker is gone and the
    waiting rows nobody took."""
    out = []
    for row in _stale_held(qs.exclude(worker=""), held_cutoff, running, created):
        alive, why = probe.holds(worker=row.worker, pid=row.worker_pid)
        if not alive:
            out.append((row, "resumed", f"heartbeat {_age(now, row.heartbeat_at)}; {why}"))
    for row in qs.filter(_waiting(queued, running)):
        since = row.heartbeat_at or getattr(row, "started_at", None) or getattr(row, created)
        if since < wait_cutoff:
            out.append(
                (row, "resent", f"waiting since {_age(now, since)} with no worker taking it")
            )
    return out


def _waiting(queued: str, running: str) -> Q:
    # Queued; or running with nobody recorded (a cycle between steps, a row from before heartbeats).
    return Q(status=queued) | Q(status=running, worker="")


def _sweep_cycles(
    now: datetime, held_cutoff: datetime, wait_cutoff: datetime, limit: int, probe: WorkerProbe
) -> list[SweepAction]:
    # quality.tasks imports this module (the sweep task calls it).
    from quality.tasks import run_quality_cycle

    out = []
    qs = QualityCycle.objects.filter(status__in=ACTIVE_STATUSES)
    for cycle, action, reason in _orphans(
        qs,
        running=RunStatus.RUNNING,
        held_cutoff=held_cutoff,
        wait_cutoff=wait_cutoff,
        probe=probe,
        now=now,
        queued=RunStatus.QUEUED,
    ):
        gave_up = _give_up(
            QualityCycle,
            cycle,
            kind="cycle",
            reason=reason,
            now=now,
            limit=limit,
            failed=RunStatus.FAILED,
        )
        if gave_up is not None:
            out += gave_up
            continue
        # The cycle stays running; its trigger re-claims it (one more attempt) and chains the
        # steps left.
        claimed = QualityCycle.objects.filter(
            pk=cycle.pk, status=cycle.status, worker=cycle.worker, heartbeat_at=cycle.heartbeat_at
        ).update(
            worker="",
            worker_pid=None,
            heartbeat_at=now,
            sweep_notes=[*cycle.sweep_notes, sweep_note(action, reason, now=now)],
        )
        if claimed:
            run_quality_cycle.delay_on_commit(
                cycle.project_id, trigger=cycle.trigger, cycle_id=cycle.pk
            )
            out.append(SweepAction("cycle", cycle.pk, action, reason))
    return out


def _cycle_id(task_id: str | None) -> int | None:
    parts = (task_id or "").split(":")
    if len(parts) >= 2 and parts[0] == "quality-cycle" and parts[1].isdigit():
        return int(parts[1])
    return None


def _sweep_cycle_leftovers(now: datetime) -> list[SweepAction]:
    """A cycle's run or model version left running or queued after its cycle ended never finishes."""
    out = []
    ended = ~Q(cycle__status__in=ACTIVE_STATUSES)
    for run in QualityRun.objects.filter(
        Q(cycle__isnull=False) & ended, status__in=ACTIVE_STATUSES
    ):
        reason = f"its relabel cycle {run.cycle_id} ended while this run was {run.status}"
        if _fail(QualityRun, run, reason, now, RunStatus.FAILED):
            out.append(SweepAction("run", run.pk, "failed", reason))
    mvs = ModelVersion.objects.filter(
        task_id__startswith="quality-cycle:", status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
    )
    live = set(
        QualityCycle.objects.filter(
            pk__in={_cycle_id(mv.task_id) for mv in mvs}, status__in=ACTIVE_STATUSES
        ).values_list("pk", flat=True)
    )
    for mv in mvs:
        if _cycle_id(mv.task_id) not in live:
            reason = (
                f"its relabel cycle {_cycle_id(mv.task_id)} ended while training was {mv.status}"
            )
            if _fail(ModelVersion, mv, reason, now, JobStatus.FAILED):
                out.append(SweepAction("training", mv.pk, "failed", reason))
    return out


def _sweep_runs(
    now: datetime, held_cutoff: datetime, wait_cutoff: datetime, limit: int, probe: WorkerProbe
) -> list[SweepAction]:
    out = []
    qs = QualityRun.objects.filter(cycle__isnull=True)
    for run, action, reason in _orphans(
        qs,
        running=RunStatus.RUNNING,
        held_cutoff=held_cutoff,
        wait_cutoff=wait_cutoff,
        probe=probe,
        now=now,
        queued=RunStatus.QUEUED,
    ):
        gave_up = _give_up(
            QualityRun,
            run,
            kind="run",
            reason=reason,
            now=now,
            limit=limit,
            failed=RunStatus.FAILED,
        )
        if gave_up is not None:
            out += gave_up
        elif job_resend(kind="run", row=run, action=action, reason=reason):
            out.append(SweepAction("run", run.pk, action, reason))
    return out


def _sweep_feature_sets(
    now: datetime, held_cutoff: datetime, wait_cutoff: datetime, limit: int, probe: WorkerProbe
) -> list[SweepAction]:
    out = []
    # A project whose live cycle has not finished its retrain step extracts features inside that
    # step: the cycle resumes them.
    in_cycle = [
        project_id
        for project_id, steps in QualityCycle.objects.filter(
            status__in=ACTIVE_STATUSES
        ).values_list("project_id", "steps_done")
        if "retrain" not in steps
    ]
    qs = FeatureSet.objects.exclude(project_id__in=in_cycle)
    for fs, action, reason in _orphans(
        qs,
        running=JobStatus.RUNNING,
        held_cutoff=held_cutoff,
        wait_cutoff=wait_cutoff,
        probe=probe,
        now=now,
        queued=JobStatus.QUEUED,
    ):
        gave_up = _give_up(
            FeatureSet,
            fs,
            kind="features",
            reason=reason,
            now=now,
            limit=limit,
            failed=JobStatus.FAILED,
        )
        if gave_up is not None:
            out += gave_up
        elif job_resend(kind="features", row=fs, action=action, reason=reason):
            out.append(SweepAction("features", fs.pk, action, reason))
    return out


def _sweep_trainings(
    now: datetime, held_cutoff: datetime, wait_cutoff: datetime, limit: int, probe: WorkerProbe
) -> list[SweepAction]:
    out = []
    qs = ModelVersion.objects.exclude(task_id__startswith="quality-cycle:")
    for mv, action, reason in _orphans(
        qs,
        running=JobStatus.RUNNING,
        held_cutoff=held_cutoff,
        wait_cutoff=wait_cutoff,
        probe=probe,
        now=now,
        queued=JobStatus.QUEUED,
    ):
        gave_up = _give_up(
            ModelVersion,
            mv,
            kind="training",
            reason=reason,
            now=now,
            limit=limit,
            failed=JobStatus.FAILED,
        )
        if gave_up is not None:
            out += gave_up
        elif job_resend(kind="training", row=mv, action=action, reason=reason):
            out.append(SweepAction("training", mv.pk, action, reason))
    return out


def _sweep_imports(
    now: datetime, held_cutoff: datetime, wait_cutoff: datetime, limit: int, probe: WorkerProbe
) -> list[SweepAction]:
    """A clip import resumes where its last committed chunk left off (``items_done``); an upload,
    whose source cannot be read again by a worker, is failed with the reason."""
    out = []
    St = ImportJob.Status
    for job, action, reason in _orphans(
        ImportJob.objects.filter(status__in=[St.QUEUED, St.RUNNING]),
        running=St.RUNNING,
        held_cutoff=held_cutoff,
        wait_cutoff=wait_cutoff,
        probe=probe,
        now=now,
        queued=St.QUEUED,
        created="started_at",
    ):
        if not import_job_resumable(job=job):
            reason = f"{reason}; cannot be resumed (no folder, manifest or bucket recorded: import again)"
        elif _tries(job) >= limit:
            reason = f"{reason}; gave up after {_tries(job)} attempt(s)"
        elif job_resend(kind="import", row=job, action=action, reason=reason):
            out.append(SweepAction("import", job.pk, action, reason))
            continue
        else:
            continue
        if _fail(ImportJob, job, reason, now, St.FAILED):
            out.append(SweepAction("import", job.pk, "failed", reason))
    return out


def _sweep_consensus(now: datetime) -> list[SweepAction]:
    """Clips whose consensus is older than their newest opinion: the update that a new annotation
    enqueues (``quality.receivers.on_annotation_committed``) is only logged when the broker is down at commit, so
    nothing else would ever send it. Recomputed here, inline (no message to pile up behind a
    backlog), at most ``REFRAIN_CONSENSUS_SWEEP_BATCH`` clips a sweep, and only once an opinion is
    older than ``REFRAIN_CONSENSUS_STALE_SECONDS``, so the normal queue has had its chance.
    ``annotation_settle`` is safe to run twice (it also settles the issue the opinion
    answers and the "after N annotations" cycle trigger)."""
    cutoff = now - timedelta(seconds=settings.REFRAIN_CONSENSUS_STALE_SECONDS)
    since = now - timedelta(hours=settings.REFRAIN_CONSENSUS_SWEEP_LOOKBACK_HOURS)
    fresh = ClipConsensus.objects.filter(
        clip_id=OuterRef("clip_id"), computed_at__gte=OuterRef("created_at")
    )
    behind = (
        Annotation.objects.filter(created_at__lt=cutoff, created_at__gte=since)
        .exclude(kind=Annotation.Kind.IMPORT)
        .filter(Exists(AnnotationLabel.objects.filter(annotation_id=OuterRef("pk"))))
        .exclude(Exists(fresh))
    )
    clip_ids = list(
        behind.values_list("clip_id", flat=True)
        .distinct()
        .order_by("clip_id")[: settings.REFRAIN_CONSENSUS_SWEEP_BATCH]
    )
    out = []
    for clip_id in clip_ids:
        newest = (
            behind.filter(clip_id=clip_id).select_related("clip__project").order_by("-id").first()
        )
        if newest is None:  # recomputed meanwhile (another sweep, a late message)
            continue
        try:
            annotation_settle(annotation=newest)
        except Exception as exc:  # one clip must not stop the others; the next sweep retries
            logger.exception("sweep: consensus of clip %s failed", clip_id)
            out.append(SweepAction("consensus", clip_id, "failed", str(exc)[:500]))
            continue
        reason = f"annotation {newest.pk} of {_age(now, newest.created_at)} had no consensus update"
        out.append(SweepAction("consensus", clip_id, "recomputed", reason))
    return out


def sweep_summary(actions: list[SweepAction]) -> dict[str, Any]:
    return {"actions": [asdict(a) for a in actions], "n": len(actions)}
