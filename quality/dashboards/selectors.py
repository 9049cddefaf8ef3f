"""Reads for the console's pages: the stored snapshot of a page, and the few aggregates cheap
enough to read live (indexed GROUP BYs over the open queue, the label issues, the model versions).

Each function is one query; the pages' query counts are pinned by tests.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
from django.conf import settings
from django.db.models import Avg, Count, F, Q, Sum
from django.utils import timezone

from active_learning.models import JobStatus, ModelVersion
from annotation.models import Project, Task
from quality.models import DashboardSnapshot, LabelIssue, QualityRun


def snapshot_get(*, project: Project, page: str) -> DashboardSnapshot | None:
    return DashboardSnapshot.objects.filter(project=project, page=page).first()


def snapshot_is_stale(snapshot: DashboardSnapshot | None) -> bool:
    if snapshot is None:
        return True
    max_age = timedelta(seconds=settings.REFRAIN_DASHBOARD_MAX_AGE_SECONDS)
    return timezone.now() - snapshot.computed_at > max_age


def task_source(reason: str) -> str:
    """The producer part of a task's reason: ``active_learning:uncertainty`` -> ``active_learning``."""
    return reason.split(":", 1)[0] or "?"


def queue_depth_frame(*, project: Project) -> pd.DataFrame:
    """Open tasks by kind and source, and the opinions still wanted from them (one query).

    Columns: kind, source, tasks, left (overlap not yet submitted).
    """
    rows = (
        Task.objects.filter(project=project, status=Task.Status.OPEN)
        .values_list("kind", "reason")
        .annotate(n=Count("pk"), left=Sum(F("overlap") - F("n_submitted")))
        .order_by()
    )
    df = pd.DataFrame(list(rows), columns=["kind", "reason", "tasks", "left"])
    if df.empty:
        return pd.DataFrame(columns=["kind", "source", "tasks", "left"])
    df["source"] = df["reason"].map(task_source)
    df["left"] = df["left"].clip(lower=0)
    return (
        df.groupby(["kind", "source"], as_index=False)[["tasks", "left"]]
        .sum()
        .sort_values(["kind", "source"])
        .reset_index(drop=True)
    )


# --- label issues over runs -----------------------------------------------------------------------


def runs_frame(*, project: Project) -> pd.DataFrame:
    """The project's quality runs in order. Columns: run, created, status, issues, routed, model."""
    rows = (
        QualityRun.objects.filter(project=project)
        .order_by("created_at", "pk")
        .values_list("pk", "created_at", "status", "n_issues", "n_routed", "model_version__number")
    )
    return pd.DataFrame(
        list(rows), columns=["run", "created", "status", "issues", "routed", "model"]
    )


def issues_by_run_frame(*, project: Project) -> pd.DataFrame:
    """Issue counts per run, type and depth. Columns: run, issue_type, depth, n."""
    rows = (
        LabelIssue.objects.filter(project=project)
        .values_list("run_id", "issue_type", "depth")
        .annotate(n=Count("pk"))
        .order_by("run_id", "issue_type", "depth")
    )
    return pd.DataFrame(list(rows), columns=["run", "issue_type", "depth", "n"])


def suspect_nodes_frame(*, project: Project, limit: int = 15) -> pd.DataFrame:
    """The taxonomy nodes with the most suspects over all runs. Columns: key, path, n, live."""
    rows = (
        LabelIssue.objects.filter(project=project, node__isnull=False)
        .values_list("node__key", "node__path")
        .annotate(n=Count("pk"), live=Count("pk", filter=Q(status__in=LabelIssue.LIVE)))
        .order_by("-n", "node__path")[:limit]
    )
    return pd.DataFrame(list(rows), columns=["key", "path", "n", "live"])


OUTCOMES: dict[str, str] = {
    LabelIssue.Status.CONFIRMED: "confirmed",
    LabelIssue.Status.REJECTED: "rejected",
    LabelIssue.Status.IN_REVIEW: "tie",
    LabelIssue.Status.ROUTED: "waiting",
}


def relabel_outcomes_frame(*, project: Project) -> pd.DataFrame:
    """What the routed relabels concluded, per run, with the precision people judged and the one
    the detector expected.

    Columns: run, confirmed, rejected, tie, waiting, routed, precision (confirmed over decided:
    confirmed + rejected; None before any decision), expected (the mean of ``1 - score`` over the
    routed issues: the share the detector's scores say are wrong).
    """
    rows = (
        LabelIssue.objects.filter(project=project, routed_at__isnull=False)
        .values_list("run_id", "status")
        .annotate(n=Count("pk"), wrong=Avg(1.0 - F("score")))
        .order_by("run_id")
    )
    runs: dict[int, dict[str, Any]] = {}
    for run, status, n, wrong in rows:
        r = runs.setdefault(
            run, {"run": run, **dict.fromkeys(OUTCOMES.values(), 0), "routed": 0, "_w": 0.0}
        )
        # A tie a reviewer settled is confirmed or rejected by now; SUPERSEDED cannot be routed.
        r[OUTCOMES.get(status, "waiting")] += n
        r["routed"] += n
        r["_w"] += float(wrong or 0.0) * n
    out = []
    for r in runs.values():
        decided = r["confirmed"] + r["rejected"]
        r["precision"] = r["confirmed"] / decided if decided else None
        r["expected"] = r.pop("_w") / r["routed"] if r["routed"] else None
        out.append(r)
    cols = ["run", *OUTCOMES.values(), "routed", "precision", "expected"]
    return pd.DataFrame(out, columns=cols)


# --- models ---------------------------------------------------------------------------------------


def model_metrics_frame(*, project: Project) -> pd.DataFrame:
    """Finished versions' headline metrics, long form. Columns: version, metric, value."""
    rows = (
        ModelVersion.objects.filter(project=project, status=JobStatus.DONE)
        .order_by("number")
        .values_list("number", "metrics")
    )
    out = []
    for number, metrics in rows:
        m = metrics or {}
        for key in ("hier_f1", "top_level_accuracy", "leaf_accuracy", "mAP"):
            if isinstance(m.get(key), int | float):
                out.append({"version": number, "metric": key, "value": float(m[key])})
        per_depth = m.get("per_depth_macro_f1") or {}
        if isinstance(per_depth, dict):
            for depth, f1 in per_depth.items():
                if isinstance(f1, int | float):
                    out.append(
                        {"version": number, "metric": f"macro F1 depth {depth}", "value": f1}
                    )
    return pd.DataFrame(out, columns=["version", "metric", "value"])


def newest_model_for_report(*, project: Project) -> ModelVersion | None:
    """The newest finished version on the project's taxonomy version, without its training
    snapshot (the ids of every annotation it trained on: megabytes on a large project)."""
    return (
        ModelVersion.objects.filter(
            project=project,
            status=JobStatus.DONE,
            taxonomy_version_id=project.taxonomy_version_id,
        )
        .defer("training_snapshot", "hyperparameters")
        .select_related("taxonomy_version")
        .order_by("-number")
        .first()
    )
