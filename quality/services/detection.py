"""Detection: a quality run reads every labelled clip's current label set and stores the suspects.

The structural check comes first and needs no model (label sets on another taxonomy version, or not
closed under ancestors); then, when the project has a finished model, ``quality.core``'s
hierarchy-aware ``find_label_issues`` over the out-of-sample probabilities. A run is claimed with a
conditional UPDATE (queued -> running), so a redelivered message does nothing; its issues and its
"done" status commit in one transaction, so a crash leaves either nothing or everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from active_learning.models import ModelVersion
from annotation.models import Project
from annotation.selectors import current_labels, taxonomy_index_cached
from quality.core import check_label_structure, find_label_issues
from quality.models import LabelIssue, QualityCycle, QualityRun, RunStatus
from quality.selectors import dense_labels, latest_done_model, model_probs
from refrain.jobs import fault_point, heartbeat, holder_fields, sweep_note
from taxonomy.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

TYPE_COUNT_FIELD = {
    LabelIssue.Type.STRUCTURAL: "n_structural",
    LabelIssue.Type.WRONG_SIBLING: "n_wrong_sibling",
    LabelIssue.Type.WRONG_BRANCH: "n_wrong_branch",
    LabelIssue.Type.MISSING_GENRE: "n_missing_genre",
    LabelIssue.Type.EXTRA_GENRE: "n_extra_genre",
}


@dataclass
class _Found:
    n_clips: int = 0
    n_scored: int = 0
    # (clip id, annotation id, score, type, node id | None, depth | None, suggested, detail)
    issues: list[tuple[int, int, float, str, int | None, int | None, list[int], dict]] = field(
        default_factory=list
    )


def _find(*, project: Project, model_version: ModelVersion | None, budget: int | None) -> _Found:
    index = taxonomy_index_cached(project.taxonomy_version)
    hier = Hierarchy(index.parents_array)
    nodes = index.nodes
    current = current_labels(project=project)
    found = _Found(n_clips=len(current.clip_ids))
    y = dense_labels(current.node_ids, index)
    report = check_label_structure(y, parents=hier)
    bad = np.zeros(len(current.clip_ids), dtype=bool)
    bad[report.bad_rows] = True
    for i, cid in enumerate(current.clip_ids):
        ann = current.annotation_ids[i]
        if current.foreign[i]:
            detail: dict[str, Any] = {"reason": "labels from another taxonomy version"}
            found.issues.append((cid, ann, 0.0, "structural", None, None, [], detail))
            bad[i] = True
        elif bad[i]:
            missing = [nodes[j] for j in report.missing_ancestors[i]]
            detail = {
                "reason": "not closed under ancestors",
                "missing_ancestors": [n.path for n in missing],
            }
            first = missing[0] if missing else None
            suggested = sorted({*current.node_ids[i], *(n.id for n in missing)})
            found.issues.append(
                (
                    cid,
                    ann,
                    0.0,
                    "structural",
                    first.id if first else None,
                    first.depth if first else None,
                    suggested,
                    detail,
                )
            )
    if model_version is None:
        return found
    probs = model_probs(model_version=model_version, hierarchy=hier)
    ok_rows = np.flatnonzero(~bad)
    rows, present = probs.rows_for([current.clip_ids[i] for i in ok_rows])
    use = present.copy()
    use[present] = probs.out_of_sample[rows[present]]
    ok_rows, rows = ok_rows[use], rows[use]
    found.n_scored = int(ok_rows.size)
    if ok_rows.size == 0:
        return found
    issues = find_label_issues(y[ok_rows], probs.pred_probs[rows], parents=hier, budget=budget)
    for rec in issues.records():
        i = int(ok_rows[rec["clip"]])
        node = nodes[rec["node"]]
        found.issues.append(
            (
                current.clip_ids[i],
                current.annotation_ids[i],
                rec["score"],
                rec["issue_type"],
                node.id,
                rec["depth"],
                [nodes[j].id for j in rec["suggested_nodes"]],
                {},
            )
        )
    return found


def quality_run_create(
    *,
    project: Project,
    model_version: ModelVersion | None = None,
    budget: int | None = None,
    cycle: QualityCycle | None = None,
) -> QualityRun:
    """A queued run (the cycle's own, if it already has one)."""
    if cycle is not None:
        run, _ = QualityRun.objects.get_or_create(
            cycle=cycle,
            defaults={"project": project, "model_version": model_version, "budget": budget},
        )
        return run
    return QualityRun.objects.create(project=project, model_version=model_version, budget=budget)


def quality_run_execute(*, run: QualityRun) -> QualityRun:
    """Claim a queued run and detect; returns the run as stored (untouched if not claimed)."""
    now = timezone.now()
    claimed = QualityRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        started_at=now,
        attempts=F("attempts") + 1,
        **holder_fields(now=now),
    )
    run.refresh_from_db()
    if not claimed:
        return run
    project = run.project
    try:
        with heartbeat(QualityRun, run.pk):
            fault_point("detect.find")
            logger.info(
                "quality run %s: detecting on model v%s",
                run.pk,
                run.model_version.number if run.model_version else "?",
            )
            found = _find(project=project, model_version=run.model_version, budget=run.budget)
            _store(run=run, found=found)
            stored = QualityRun.objects.values_list("n_issues", "n_routed").get(pk=run.pk)
            logger.info("quality run %s: %d issues stored, %d routed", run.pk, *stored)
    except Exception as exc:
        QualityRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, error=repr(exc)[:2000], finished_at=timezone.now()
        )
        raise
    run.refresh_from_db()
    return run


def quality_run_requeue(*, run: QualityRun, action: str, reason: str) -> bool:
    """running (its worker gone: detection wrote nothing) -> queued again, with a note.

    Conditional on the row as the caller saw it, so of two callers only one requeues it.
    """
    return bool(
        QualityRun.objects.filter(
            pk=run.pk, status=run.status, worker=run.worker, heartbeat_at=run.heartbeat_at
        ).update(
            status=RunStatus.QUEUED,
            worker="",
            worker_pid=None,
            heartbeat_at=timezone.now(),
            sweep_notes=[*run.sweep_notes, sweep_note(action, reason)],
        )
    )


def _store(*, run: QualityRun, found: _Found) -> None:
    now = timezone.now()
    project = run.project
    counts: dict[str, int] = dict.fromkeys(TYPE_COUNT_FIELD.values(), 0)
    with transaction.atomic():
        # Lock: the run row, so a second executor (impossible after the claim, but cheap to rule
        # out) cannot interleave its writes with ours.
        QualityRun.objects.select_for_update().get(pk=run.pk)
        # A newer judgement replaces older open ones; routed or in-review issues keep going.
        superseded = (
            LabelIssue.objects.filter(project=project, status=LabelIssue.Status.OPEN)
            .exclude(run=run)
            .update(status=LabelIssue.Status.SUPERSEDED, closed_at=now)
        )
        live = set(
            LabelIssue.objects.filter(
                project=project,
                status__in=LabelIssue.LIVE,
                clip_id__in=[f[0] for f in found.issues],
            ).values_list("clip_id", flat=True)
        )
        rows = []
        for rank, (cid, ann, score, kind, node, depth, suggested, detail) in enumerate(
            found.issues, start=1
        ):
            if cid in live:
                continue
            rows.append(
                LabelIssue(
                    run=run,
                    project=project,
                    clip_id=cid,
                    annotation_id=ann,
                    score=score,
                    rank=rank,
                    issue_type=kind,
                    node_id=node,
                    depth=depth,
                    suggested_node_ids=suggested,
                    detail=detail,
                    created_at=now,
                )
            )
            counts[TYPE_COUNT_FIELD[LabelIssue.Type(kind)]] += 1
        # The partial unique index keeps one live issue per clip even against a concurrent run.
        LabelIssue.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
        n_issues = LabelIssue.objects.filter(run=run).count()
        QualityRun.objects.filter(pk=run.pk).update(
            status=RunStatus.DONE,
            finished_at=timezone.now(),
            n_clips=found.n_clips,
            n_scored=found.n_scored,
            n_issues=n_issues,
            n_already_open=len(found.issues) - len(rows),
            n_superseded=superseded,
            **counts,
        )


def quality_run_detect(
    *,
    project: Project,
    model_version: ModelVersion | None = None,
    budget: int | None = None,
    use_model: bool = True,
    cycle: QualityCycle | None = None,
) -> QualityRun:
    """Run detection now: structural check, then the model's (the given one, else the project's
    latest finished model, unless ``use_model`` is False). ``budget`` caps the model's issues;
    without one, every clip the confident-learning rule flags becomes an issue."""
    if model_version is None and use_model:
        model_version = latest_done_model(project=project)
    run = quality_run_create(
        project=project, model_version=model_version, budget=budget, cycle=cycle
    )
    return quality_run_execute(run=run)


def quality_run_summary(run: QualityRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "status": run.status,
        "model_version": run.model_version_id,
        "clips": run.n_clips,
        "scored": run.n_scored,
        "issues": run.n_issues,
        "by_type": {str(kind): getattr(run, f) for kind, f in TYPE_COUNT_FIELD.items()},
        "already_live": run.n_already_open,
        "superseded": run.n_superseded,
    }
