"""Celery entry points for label quality: ids in, one service call, a JSON summary out."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from annotation.models import Annotation, Project, ReviewDecision
from quality.models import QualityRun


@shared_task(name="quality.tasks.run_quality_cycle", acks_late=True)
def run_quality_cycle(
    project_id: int, trigger: str = "manual", cycle_id: int | None = None
) -> dict[str, Any]:
    """Retrain -> detect -> route -> acquire; returns once the cycle finished (or was running)."""
    from quality.services.cycle import CycleBusy, cycle_run, cycle_summary

    project = Project.objects.select_related("taxonomy_version").get(pk=project_id)
    try:
        cycle = cycle_run(project=project, trigger=trigger, cycle_id=cycle_id)
    except CycleBusy as busy:
        return {"status": "already_running", "cycle": busy.cycle.pk if busy.cycle else None}
    return cycle_summary(cycle)


@shared_task(name="quality.tasks.detect_label_issues", acks_late=True)
def detect_label_issues(run_id: int) -> dict[str, Any]:
    """Execute a queued quality run (claimed by a conditional UPDATE: redeliveries do nothing)."""
    from quality.services.detection import quality_run_execute, quality_run_summary

    return quality_run_summary(quality_run_execute(run=QualityRun.objects.get(pk=run_id)))


@shared_task(name="quality.tasks.consensus_on_annotation", acks_late=True)
def consensus_on_annotation(annotation_id: int) -> dict[str, Any]:
    from quality.services.consensus import annotation_consensus_update

    annotation = Annotation.objects.select_related("clip__project").get(pk=annotation_id)
    return annotation_consensus_update(annotation=annotation)


@shared_task(name="quality.tasks.adjudicate_on_review", acks_late=True)
def adjudicate_on_review(decision_id: int) -> dict[str, Any]:
    from quality.services.consensus import issue_adjudicate_by_review

    issue = issue_adjudicate_by_review(decision=ReviewDecision.objects.get(pk=decision_id))
    return {"issue": issue.pk if issue else None, "status": issue.status if issue else None}


@shared_task(name="quality.tasks.consensus_project", acks_late=True)
def consensus_project(project_id: int) -> dict[str, Any]:
    from quality.services.consensus import consensus_recompute_project

    return consensus_recompute_project(project=Project.objects.get(pk=project_id))
