"""An admin's retry and cancel of a project's background jobs (the jobs page's buttons).

**Retry** (a failed job) re-sends it the way the orphan sweep resumes one (``quality.services.sweep``):
the row goes back to queued with a note and its message is sent once the transaction commits; a
feature set extracts only its missing chunks, a training trains the same version, a detection run
detects again, an import skips the items its committed chunks accounted for. A failed relabel cycle
cannot be resumed (its steps' inputs have moved on): retrying it queues a new cycle. A training or
detection run that belongs to a cycle is retried through its cycle; an upload cannot be read again.

**Cancel** (a queued or running feature extraction or relabel cycle) marks the row failed with
"cancelled by <user>" and a note, conditional on its status. Its worker stops at the next boundary
that checks the row: each feature chunk skips a failed set (the chunk being embedded finishes; the
finalize leaves a failed set alone), and each cycle step returns at once for a cycle no longer
running (the step under way finishes and records its result; the sweep fails its leftover training
or run). Trainings, detection runs and imports have no such stopping point, so they cannot be
cancelled.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.services.features import feature_set_requeue
from active_learning.services.training import model_version_requeue
from active_learning.tasks import extract_features_for_project, train_project_model
from annotation.models import ImportJob, Project
from annotation.services.clips import import_job_requeue, import_job_resumable, import_task_kwargs
from annotation.tasks import import_clips
from quality.models import ACTIVE_STATUSES, QualityCycle, QualityRun, RunStatus
from quality.services.cycle import cycle_enqueue
from quality.services.detection import quality_run_requeue
from refrain.errors import Conflict, NotFound
from refrain.jobs import sweep_note

#: The jobs page's kinds (``JobRow.kind``) and their rows.
JOB_MODELS: dict[str, type[Model]] = {
    "import": ImportJob,
    "features": FeatureSet,
    "training": ModelVersion,
    "cycle": QualityCycle,
    "run": QualityRun,
}
CANCELLABLE = ("features", "cycle")
FAILED = "failed"  # the same value in every job kind's status choices


class JobNotFound(NotFound):
    code = "job_not_found"


class JobStateConflict(Conflict):
    code = "job_state"


def job_get(*, project: Project, kind: str, job_id: int) -> Any:
    """The project's job row; another project's job is not found, like an unknown one."""
    model = JOB_MODELS.get(kind)
    row = model._default_manager.filter(pk=job_id, project=project).first() if model else None
    if row is None:
        raise JobNotFound(
            f"no {kind} job {job_id} in this project"
            if model
            else f"unknown job kind {kind!r}; kinds are {', '.join(JOB_MODELS)}"
        )
    return row


def _why(user: Any, what: str, row: Any) -> str:
    was = f" (was: {row.error[:200]})" if getattr(row, "error", "") else ""
    return f"{what} by {getattr(user, 'username', user)}{was}"


@transaction.atomic
def job_resend(*, kind: str, row: Model, action: str, reason: str) -> bool:
    """Put a feature set, training, detection run or clip import back to queued (conditional on
    the state it was read in, with a note) and send its task again, with the arguments it was first
    sent with, once the transaction commits. False when the row moved meanwhile (nothing sent).
    The orphan sweep and an admin's retry both resend through here."""
    if kind == "features":
        if not feature_set_requeue(feature_set=row, action=action, reason=reason):
            return False
        extract_features_for_project.delay_on_commit(
            row.project_id, backend=row.backend, feature_set_id=row.pk
        )
    elif kind == "training":
        if not model_version_requeue(model_version=row, action=action, reason=reason):
            return False
        train_project_model.delay_on_commit(
            row.project_id,
            trigger=row.trigger,
            model_version_id=row.pk,
            n_folds=row.n_folds,
            seed=row.seed,
            kind=row.kind,
        )
    elif kind == "run":
        if not quality_run_requeue(run=row, action=action, reason=reason):
            return False
        from quality.tasks import detect_label_issues  # quality.tasks imports quality's services

        detect_label_issues.delay_on_commit(row.pk)
    elif kind == "import":
        if not import_job_requeue(job=row, action=action, reason=reason):
            return False
        import_clips.delay_on_commit(row.project_id, **import_task_kwargs(job=row))
    else:
        raise ValueError(f"no resend for a {kind!r} job")
    return True


def job_retry(*, project: Project, kind: str, job_id: int, user: Any) -> dict[str, Any]:
    """Send a failed job again; what was queued (``{"kind", "id", "status"}``).

    Raises
    ------
    JobNotFound
        No such job in the project.
    JobStateConflict
        The job is not failed, belongs to a cycle, cannot be read again, or moved meanwhile.
    """
    row = job_get(project=project, kind=kind, job_id=job_id)
    if row.status != FAILED:
        raise JobStateConflict(f"{kind} {job_id} is {row.status}; only a failed job is retried")
    reason = _why(user, "retried", row)
    if kind == "cycle":
        cycle, _created = cycle_enqueue(project=project, trigger=row.trigger)
        QualityCycle.objects.filter(pk=row.pk).update(
            sweep_notes=[*row.sweep_notes, sweep_note("retried", f"{reason}; as cycle {cycle.pk}")]
        )
        return {"kind": "cycle", "id": cycle.pk, "status": cycle.status}
    if kind == "training" and (row.task_id or "").startswith("quality-cycle:"):
        raise JobStateConflict(f"training {job_id} belongs to a relabel cycle: retry the cycle")
    if kind == "run" and row.cycle_id is not None:
        raise JobStateConflict(f"run {job_id} belongs to relabel cycle {row.cycle_id}: retry it")
    if kind == "import" and not import_job_resumable(job=row):
        raise JobStateConflict(f"import {job_id} was an upload, which cannot be read again")
    if not job_resend(kind=kind, row=row, action="retried", reason=reason):
        raise JobStateConflict(f"{kind} {job_id} changed meanwhile; reload and try again")
    # A fresh start: no end time, no old error (kept in the note).
    type(row)._default_manager.filter(pk=row.pk).update(error="", finished_at=None)
    return {"kind": kind, "id": row.pk, "status": "queued"}


def job_cancel(*, project: Project, kind: str, job_id: int, user: Any) -> dict[str, Any]:
    """Stop a queued or running feature extraction or relabel cycle at its next boundary.

    Raises
    ------
    JobNotFound
        No such job in the project.
    JobStateConflict
        A kind without a stopping point, or a job that is no longer queued or running.
    """
    row = job_get(project=project, kind=kind, job_id=job_id)
    if kind not in CANCELLABLE:
        raise JobStateConflict(
            f"a {kind} job cannot be cancelled (it has no point to stop at); "
            f"only {' and '.join(CANCELLABLE)} jobs can"
        )
    active = ACTIVE_STATUSES if kind == "cycle" else (JobStatus.QUEUED, JobStatus.RUNNING)
    reason = _why(user, "cancelled", row)
    now = timezone.now()
    cancelled = (
        type(row)
        ._default_manager.filter(pk=row.pk, status__in=active)
        .update(
            status=RunStatus.FAILED if kind == "cycle" else JobStatus.FAILED,
            error=reason[:4000],
            finished_at=now,
            worker="",
            worker_pid=None,
            sweep_notes=[*row.sweep_notes, sweep_note("cancelled", reason, now=now)],
        )
    )
    if not cancelled:
        raise JobStateConflict(f"{kind} {job_id} is {row.status}; only a queued or running job")
    return {"kind": kind, "id": row.pk, "status": FAILED}
