"""Celery entry points for label quality: ids in, one service call, a JSON summary out.

As in every app, tasks import the services they call at module level; a service that sends one of
these tasks (the cycle sends ``run_quality_cycle``, the sweep re-sends lost messages) imports it in
the function that sends it, since this module imports the service.
"""

from __future__ import annotations

from typing import Any

from celery import Task, chain, shared_task
from django.conf import settings

from annotation.models import Annotation, Project, ReviewDecision
from quality.dashboards.snapshots import dashboards_refresh
from quality.models import QualityRun
from quality.services.consensus import consensus_recompute_project, issue_adjudicate_by_review
from quality.services.cycle import (
    CycleBusy,
    annotation_settle,
    cycle_begin,
    cycle_step_execute,
    cycle_summary,
)
from quality.services.detection import quality_run_execute, quality_run_summary
from quality.services.summary import clip_summaries_refresh
from quality.services.sweep import orphans_sweep, sweep_summary

#: Seconds before a cycle step that found its project locked tries again.
CYCLE_STEP_RETRY_S = 5


# acks_late + reject_on_worker_lost: the trigger only claims the cycle under its lock and chains the
# steps left; a redelivery re-claims it and the steps already checkpointed are skipped.
@shared_task(
    name="quality.tasks.run_quality_cycle", bind=True, acks_late=True, reject_on_worker_lost=True
)
def run_quality_cycle(
    self: Task, project_id: int, trigger: str = "manual", cycle_id: int | None = None
) -> dict[str, Any]:
    """Retrain -> detect -> route -> acquire as a chain of one task per step, each on its queue.

    The task replaces itself with the chain, whose last task takes over this task's id: the
    caller's ``AsyncResult.get()`` returns the cycle's summary once the whole cycle finished.
    """
    project = Project.objects.select_related("taxonomy_version").get(pk=project_id)
    try:
        cycle, steps = cycle_begin(project=project, trigger=trigger, cycle_id=cycle_id)
    except CycleBusy as busy:
        return {"status": "already_running", "cycle": busy.cycle.pk if busy.cycle else None}
    if not steps:
        return cycle_summary(cycle)
    queues = settings.REFRAIN_CYCLE_STEP_QUEUES
    return self.replace(
        chain(
            *(
                run_cycle_step.si(cycle.pk, step, finish=step == steps[-1]).set(
                    queue=queues.get(step, settings.CELERY_TASK_DEFAULT_QUEUE)
                )
                for step in steps
            )
        )
    )


# acks_late + reject_on_worker_lost: a step is checkpointed and idempotent (a model keyed by the
# cycle, the cycle's one run, tasks keyed issue:<id>), and runs under the project's lock, so a
# message requeued after its pool child died re-runs the step once; the step counts the loss as an
# attempt (quality.services.cycle), so a step that kills its worker every time fails the cycle.
@shared_task(
    name="quality.tasks.run_cycle_step",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def run_cycle_step(self: Task, cycle_id: int, step: str, finish: bool = False) -> dict[str, Any]:
    """One step of a relabel cycle; retried while another worker is inside a step of it."""
    try:
        cycle = cycle_step_execute(cycle_id=cycle_id, step=step, finish=finish)
    except CycleBusy as busy:
        raise self.retry(countdown=CYCLE_STEP_RETRY_S) from busy
    return cycle_summary(cycle)


# acks_late: the run is claimed queued -> running by a conditional UPDATE, so a redelivery does
# nothing. No reject_on_worker_lost: a requeued message would find the run running and stop; the
# orphan sweep resumes it instead, counting attempts.
@shared_task(name="quality.tasks.detect_label_issues", acks_late=True)
def detect_label_issues(run_id: int) -> dict[str, Any]:
    """Execute a queued quality run (claimed by a conditional UPDATE: redeliveries do nothing)."""
    return quality_run_summary(quality_run_execute(run=QualityRun.objects.get(pk=run_id)))


@shared_task(name="quality.tasks.consensus_on_annotation", acks_late=True)
def consensus_on_annotation(annotation_id: int) -> dict[str, Any]:
    annotation = Annotation.objects.select_related("clip__project__loop_policy").get(
        pk=annotation_id
    )
    return annotation_settle(annotation=annotation)


@shared_task(name="quality.tasks.adjudicate_on_review", acks_late=True)
def adjudicate_on_review(decision_id: int) -> dict[str, Any]:
    decision = ReviewDecision.objects.select_related("clip__project").get(pk=decision_id)
    issue = issue_adjudicate_by_review(decision=decision)
    if issue is not None:
        clip_summaries_refresh(project=decision.clip.project, clip_ids=[decision.clip_id])
    return {"issue": issue.pk if issue else None, "status": issue.status if issue else None}


@shared_task(name="quality.tasks.consensus_project", acks_late=True)
def consensus_project(project_id: int) -> dict[str, Any]:
    return consensus_recompute_project(project=Project.objects.get(pk=project_id))


@shared_task(name="quality.tasks.refresh_clip_summaries", acks_late=True)
def refresh_clip_summaries(project_id: int, clip_ids: list[int] | None = None) -> dict[str, Any]:
    """Recompute the explorer's summary rows (idempotent: a redelivery writes the same rows)."""
    project = Project.objects.select_related("taxonomy_version").get(pk=project_id)
    return {"written": clip_summaries_refresh(project=project, clip_ids=clip_ids)}


# Acked early and not retried: a lost sweep is simply the next minute's. Safe on two beats at once
# (every resume is a conditional UPDATE).
@shared_task(name="quality.tasks.sweep_orphans")
def sweep_orphans() -> dict[str, Any]:
    """Resume (or fail) the jobs whose worker is gone; see ``quality.services.sweep``."""
    return sweep_summary(orphans_sweep())


# Acked early: a lost refresh is asked again by the next page view that finds its snapshot old.
@shared_task(name="quality.tasks.refresh_dashboards")
def refresh_dashboards(project_id: int) -> dict[str, Any]:
    """Recompute the console's snapshots of one project (``quality.dashboards.snapshots``)."""
    return {
        "project": project_id,
        "seconds": dashboards_refresh(project=Project.objects.get(pk=project_id)),
    }
