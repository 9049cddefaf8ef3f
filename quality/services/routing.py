"""Routing: the top open issues of a run become blind relabel tasks, within the relabel budget.

A relabel task comes from :func:`annotation.services.enqueue.task_enqueue` with a
``LabelIssueFound`` source (``kind=relabel``, ``overlap=1``, keyed ``issue:<id>``, so re-routing the
same run creates nothing), and the queue offers it only to annotators who never heard the clip. The budget
counts every issue of the run that was ever routed, so routing a run twice routes it once.

Where the project is linked to Label Studio, routing also reopens the clip's Label Studio task for one
more annotator (``annotation.integrations.labelstudio``, on a worker after the routing commits); the
Label Studio answer is stored as the relabel task's annotation, so the issue closes as it would
after a relabel in Refrain (``annotation_committed`` → ``quality.receivers``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.integrations.labelstudio.services import ls_relabels_request_on_commit
from annotation.models import Task
from annotation.services.enqueue import LabelIssueFound, task_enqueue
from quality.models import LabelIssue, QualityRun, RunStatus


def issues_route(*, run: QualityRun, budget: int | None = None) -> dict[str, Any]:
    """Route the run's most suspect open issues; returns what was routed. Idempotent."""
    project = run.project
    budget = project.loop_policy.relabel_budget if budget is None else budget
    now = timezone.now()
    with transaction.atomic():
        # Lock: the run row, so two routers of one run count its budget once.
        run = QualityRun.objects.select_for_update().get(pk=run.pk)
        if run.status != RunStatus.DONE:
            return {"routed": 0, "reason": f"run is {run.status}"}
        already = LabelIssue.objects.filter(run=run, routed_at__isnull=False).count()
        left = max(budget - already, 0)
        # A clip someone is already relabelling (sent back by a reviewer, acquired for a second
        # opinion) waits: a second relabel task would spend two opinions on one doubt.
        open_relabel = Task.objects.filter(
            clip_id=OuterRef("clip_id"), kind=Task.Kind.RELABEL, status=Task.Status.OPEN
        )
        issues = list(
            LabelIssue.objects.filter(run=run, status=LabelIssue.Status.OPEN)
            .filter(~Exists(open_relabel))
            .order_by("rank", "pk")[:left]
        )
        sources = [
            # Blind: a source names ids and the score, never the labels given or suggested.
            LabelIssueFound(
                clip_id=issue.clip_id,
                issue_id=issue.pk,
                run_id=run.pk,
                issue_type=issue.issue_type,
                score=issue.score,
            )
            for issue in issues
        ]
        by_key = task_enqueue(project=project, sources=sources).task_ids
        for issue in issues:
            issue.relabel_task_id = by_key[f"issue:{issue.pk}"]
            issue.status = LabelIssue.Status.ROUTED
            issue.routed_at = now
        LabelIssue.objects.bulk_update(issues, ["relabel_task", "status", "routed_at"])
        QualityRun.objects.filter(pk=run.pk).update(n_routed=already + len(issues))
        # A clip of a project linked to Label Studio is also re-asked there, for one more annotator;
        # the answer comes back (webhook or pull) as this relabel task's annotation.
        labelstudio = ls_relabels_request_on_commit(task_ids=list(by_key.values()))
    return {
        "routed": len(issues),
        "routed_before": already,
        "budget": budget,
        "tasks": sorted(by_key.values()),
        "labelstudio": labelstudio,
    }
