"""Reads for label quality: rows turned into the arrays ``quality.core`` consumes, and page data.

The ML layer owns model predictions and features (``active_learning.selectors``); the wrappers
below are the only places this app reads them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from django.db.models import Count, F, QuerySet, Value
from django.db.models.functions import Floor, Least
from django.utils import timezone

from active_learning.models import FeatureSet, ModelVersion
from active_learning.selectors import (
    feature_matrix,
    latest_model_version,
    per_node_rows,
    prediction_matrix,
)
from active_learning.services.acquisition import RelabelEvidence
from annotation.models import (
    Annotation,
    AnnotationLabel,
    Clip,
    ImportJob,
    Project,
    ReviewDecision,
    Task,
    TaxonomyNode,
)
from annotation.selectors import TaxonomyIndex, current_labels, taxonomy_index_cached
from quality.core.consensus import Annotations
from quality.models import AnnotatorQuality, ClipConsensus, LabelIssue, QualityCycle, QualityRun
from taxonomy.hierarchy import Hierarchy

# --- model outputs (owned by the ML layer) ---------------------------------------------------------


def latest_done_model(*, project: Project) -> ModelVersion | None:
    """The project's newest finished model, if it was trained on the current taxonomy version."""
    mv = latest_model_version(project=project)
    if mv is None or mv.taxonomy_version_id != project.taxonomy_version_id:
        return None
    return mv


@dataclass(frozen=True)
class ModelProbs:
    """(N,) clip ids, (N, K) hierarchy-consistent probabilities, (N,) out-of-sample mask."""

    clip_ids: np.ndarray
    pred_probs: np.ndarray
    out_of_sample: np.ndarray

    def rows_for(self, clip_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(n,) row of each clip in ``pred_probs`` (-1 where absent), and the (n,) present mask."""
        pos = {int(c): i for i, c in enumerate(self.clip_ids)}
        rows = np.array([pos.get(c, -1) for c in clip_ids], dtype=np.int64)
        return rows, rows >= 0


def near_chance_paths(*, project: Project) -> set[str]:
    """Paths of the genres the newest model barely picks over their siblings (models page's flag)."""
    mv = latest_done_model(project=project)
    if mv is None:
        return set()
    return {row["path"] for row in per_node_rows(model_version=mv) if row["near_chance"]}


def model_probs(*, model_version: ModelVersion, hierarchy: Hierarchy) -> ModelProbs:
    """The model's probabilities for its clips, made hierarchy-consistent (float32 rounding can
    let a child exceed its parent by an ulp, which ``quality.core`` rejects)."""
    clip_ids, probs, oos = prediction_matrix(model_version=model_version)
    p = hierarchy.make_consistent(np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0))
    return ModelProbs(np.asarray(clip_ids, dtype=np.int64), p, np.asarray(oos, dtype=bool))


def project_features(*, project: Project) -> tuple[np.ndarray, np.ndarray] | None:
    """(N,) clip ids and (N, D) embeddings of the project's finished feature set, or None."""
    return feature_matrix(project=project)


def chance_probs(hierarchy: Hierarchy, n: int) -> np.ndarray:
    """(n, K) marginals whose every parent->child conditional is 0.5: "no model" as a prior that
    prefers no decision, so votes alone decide and an even split stays a tie."""
    return np.tile(0.5 ** (hierarchy.depth.astype(np.float64) + 1.0), (n, 1))


# --- labels ---------------------------------------------------------------------------------------


def relabel_evidence(*, project: Project) -> RelabelEvidence:
    """Consensus quality per clip and CROWDLAB's weights (model; mean annotator) from the last
    project-wide pass, for the relabel-or-new acquisition strategy (1, 1 when none)."""
    wm = (
        ClipConsensus.objects.filter(project=project, scope="project", model_weight__gt=0)
        .order_by("-computed_at")
        .values_list("model_weight", flat=True)
        .first()
    )
    weights = [
        w
        for w in AnnotatorQuality.objects.filter(project=project, weight__gt=0).values_list(
            "weight", flat=True
        )
        if w is not None
    ]
    return RelabelEvidence(
        clip_quality=dict(
            ClipConsensus.objects.filter(project=project).values_list("clip_id", "quality")
        ),
        model_weight=float(wm or 1.0),
        annotator_weight=float(np.mean(weights)) if weights else 1.0,
    )


def dense_labels(node_ids: list[list[int]], index: TaxonomyIndex) -> np.ndarray:
    """(N, K) int8 rows from node-id lists of ``index``'s version (as stored: not re-closed)."""
    y = np.zeros((len(node_ids), len(index.nodes)), dtype=np.int8)
    for i, ids in enumerate(node_ids):
        cols = [index.by_id[n].index for n in ids if n in index.by_id]
        y[i, cols] = 1
    return y


@dataclass(frozen=True)
class LongAnnotations:
    """Long-form annotations of some clips: the core's input plus the ids to map results back.

    ``annotators[m]`` is a user id, or ``"source:<source>"`` for annotations without a user (imports).
    """

    clip_ids: list[int]
    annotators: list[int | str]
    annotation_ids: list[int]
    annotations: Annotations


def long_annotations(
    *, project: Project, index: TaxonomyIndex, clip_ids: list[int] | None = None
) -> LongAnnotations:
    """Every annotator's latest label set per clip on the project's version (reviews excluded).

    Label sets are closed under ancestors here, so an annotation with a structural defect still
    counts as the vote it meant; the structural check reports the defect separately.
    """
    qs = Annotation.objects.filter(
        clip__project=project, clip__status=Clip.Status.READY, taxonomy_version=index.version
    ).exclude(kind=Annotation.Kind.REVIEW)
    if clip_ids is not None:
        qs = qs.filter(clip_id__in=clip_ids)
    latest: dict[tuple[int, int | str], int] = {}
    for ann_id, clip_id, user_id, source in qs.order_by("-created_at", "-id").values_list(
        "id", "clip_id", "user_id", "source"
    ):
        who: int | str = user_id if user_id is not None else f"source:{source}"
        latest.setdefault((clip_id, who), ann_id)
    clips = sorted({c for c, _ in latest}) if clip_ids is None else list(clip_ids)
    annotators = sorted({w for _, w in latest}, key=str)
    c_pos = {c: i for i, c in enumerate(clips)}
    m_pos = {w: i for i, w in enumerate(annotators)}
    items = sorted(latest.items(), key=lambda kv: kv[1])
    ann_ids = [a for _, a in items]
    row_of = {a: i for i, a in enumerate(ann_ids)}
    k = len(index.nodes)
    y = np.zeros((len(ann_ids), k), dtype=np.int8)
    for ann_id, node_id in AnnotationLabel.objects.filter(annotation_id__in=ann_ids).values_list(
        "annotation_id", "node_id"
    ):
        node = index.by_id.get(node_id)
        if node is not None:
            y[row_of[ann_id], node.index] = 1
    hier = Hierarchy(index.parents_array)
    y = hier.ancestor_close(y) if len(ann_ids) else y
    ann = Annotations(
        clip=np.array([c_pos[c] for (c, _), _ in items], dtype=np.int64),
        annotator=np.array([m_pos[w] for (_, w), _ in items], dtype=np.int64),
        labels=y,
        n_clips=len(clips),
        n_annotators=len(annotators),
    )
    return LongAnnotations(clips, annotators, ann_ids, ann)


# --- pages ----------------------------------------------------------------------------------------


def issue_list(
    *,
    project: Project,
    issue_type: str | None = None,
    status: str | None = None,
    node_id: int | None = None,
    depth: int | None = None,
) -> QuerySet[LabelIssue]:
    """The project's issues, newest run first then by rank, filtered."""
    qs = LabelIssue.objects.filter(project=project).select_related("clip", "node", "run")
    if issue_type:
        qs = qs.filter(issue_type=issue_type)
    if status:
        qs = qs.filter(status=status)
    if node_id is not None:
        qs = qs.filter(node_id=node_id)
    if depth is not None:
        qs = qs.filter(depth=depth)
    return qs.order_by("-run_id", "rank", "pk")


def issue_counts(*, project: Project) -> dict[str, Any]:
    """Counts by type, depth and status for the dashboard (one query each)."""
    base = LabelIssue.objects.filter(project=project)
    return {
        "by_type_depth": list(
            base.values("issue_type", "depth").annotate(n=Count("pk")).order_by("issue_type")
        ),
        "by_status": dict(base.values_list("status").annotate(n=Count("pk")).order_by()),
    }


def recent_cycles(*, project: Project, limit: int = 20) -> list[QualityCycle]:
    return list(QualityCycle.objects.filter(project=project).order_by("-created_at")[:limit])


def recent_runs(*, project: Project, limit: int = 20) -> list[QualityRun]:
    return list(QualityRun.objects.filter(project=project).order_by("-created_at")[:limit])


def nodes_of(ids: list[int]) -> list[TaxonomyNode]:
    return list(TaxonomyNode.objects.filter(pk__in=ids).order_by("index"))


#: Bins of the dashboard's consensus-quality histogram over [0, 1].
CONSENSUS_BINS = 30


def dashboard_frames(*, project: Project) -> dict[str, pd.DataFrame]:
    """The dashboard's data, one small query per frame."""
    by_type = pd.DataFrame(
        list(
            LabelIssue.objects.filter(project=project)
            .values("issue_type", "depth")
            .annotate(n=Count("pk"))
            .order_by("issue_type", "depth")
        ),
        columns=["issue_type", "depth", "n"],
    )
    last_run = (
        QualityRun.objects.filter(project=project, status="done").order_by("-created_at").first()
    )
    scores = pd.DataFrame(
        list(LabelIssue.objects.filter(run=last_run).values("score", "status")) if last_run else [],
        columns=["score", "status"],
    )
    # Binned in SQL: one row per (bin, annotation count), not one per clip (100k on a large
    # project: 1.4 MB of page and most of its render time).
    bins = CONSENSUS_BINS
    consensus = pd.DataFrame(
        list(
            ClipConsensus.objects.filter(project=project, quality__isnull=False)
            .annotate(bin=Least(Floor(F("quality") * bins), Value(bins - 1.0)))
            .values_list("bin", "n_annotations")
            .annotate(count=Count("pk"))
            .order_by("bin", "n_annotations")
        ),
        columns=["bin", "n", "count"],
    )
    consensus["quality"] = (consensus["bin"].astype(float) + 0.5) / bins
    annotators = pd.DataFrame(
        list(
            AnnotatorQuality.objects.filter(project=project, quality__isnull=False).values_list(
                "user__username", "quality", "n_annotations"
            )
        ),
        columns=["annotator", "quality", "n"],
    )
    cycles = []
    for c in QualityCycle.objects.filter(project=project).order_by("created_at"):
        res = c.results or {}
        acq = res.get("acquire", {})
        cycles.append(
            {
                "cycle": c.pk,
                "started": c.started_at or c.created_at,
                "issues": res.get("detect", {}).get("issues", 0),
                "routed": res.get("route", {}).get("routed", 0),
                "acquired": acq.get("created_label", 0) + acq.get("created_relabel", 0),
            }
        )
    return {
        "by_type_depth": by_type,
        "scores": scores,
        "consensus": consensus,
        "annotators": annotators,
        "cycles": pd.DataFrame(
            cycles, columns=["cycle", "started", "issues", "routed", "acquired"]
        ),
    }


@dataclass(frozen=True)
class TreeRow:
    node: TaxonomyNode
    prob: float | None
    given: bool
    consensus: bool
    suggested: bool

    @property
    def percent(self) -> float:
        return 0.0 if self.prob is None else round(100.0 * self.prob, 1)


@dataclass(frozen=True)
class HistoryEvent:
    at: Any
    kind: str
    text: str
    obj: Any = None


def clip_quality_view(*, clip: Clip) -> dict[str, Any]:
    """Everything the clip's issue page shows: labels, the model's tree, the history."""
    project = clip.project
    index = taxonomy_index_cached(project.taxonomy_version)
    current = current_labels(project=project, clip_ids=[clip.pk])
    given = set(current.node_ids[0]) if current.clip_ids else set()
    consensus = ClipConsensus.objects.filter(clip=clip).first()
    issues = list(
        LabelIssue.objects.filter(clip=clip)
        .select_related("run", "node", "relabel_task", "review_task", "adjudicated_by")
        .order_by("-created_at")
    )
    live = next((i for i in issues if i.status in LabelIssue.LIVE), issues[0] if issues else None)
    suggested = set(live.suggested_node_ids) if live else set()
    mv = latest_done_model(project=project)
    probs: np.ndarray | None = None
    if mv is not None:
        # This clip's row only: the whole (N, K) matrix made consistent costs seconds at 100k clips.
        hier = Hierarchy(index.parents_array)
        rows, present = model_probs_rows(model_version=mv, hierarchy=hier, clip_ids=[clip.pk])
        if present[0]:
            probs = rows[0]
    cons_ids = set(consensus.node_ids) if consensus else set()
    # Depth-first order, so the indented list reads as the tree.
    children: dict[int | None, list[TaxonomyNode]] = defaultdict(list)
    for n in index.nodes:
        children[n.parent_id].append(n)
    tree: list[TreeRow] = []
    stack = list(reversed(children[None]))
    while stack:
        n = stack.pop()
        tree.append(
            TreeRow(
                n,
                None if probs is None else float(probs[n.index]),
                n.id in given,
                n.id in cons_ids,
                n.id in suggested,
            )
        )
        stack.extend(reversed(children[n.id]))
    annotations = list(
        Annotation.objects.filter(clip=clip).select_related("user").order_by("created_at", "pk")
    )
    labels_of: dict[int, list[str]] = defaultdict(list)
    for ann_id, path, explicit in (
        AnnotationLabel.objects.filter(annotation__clip=clip)
        .order_by("node__index")
        .values_list("annotation_id", "node__path", "explicit")
    ):
        if explicit:
            labels_of[ann_id].append(path)
    events = [
        HistoryEvent(
            a.created_at, f"annotation:{a.kind}", f"{a.source}: {', '.join(labels_of[a.pk])}", a
        )
        for a in annotations
    ]
    for i in issues:
        events.append(
            HistoryEvent(
                i.created_at,
                "issue",
                f"run {i.run_id} flagged {i.get_issue_type_display().lower()} (score {i.score:.3f}, rank {i.rank})",
                i,
            )
        )
        if i.routed_at:
            events.append(
                HistoryEvent(i.routed_at, "routed", f"relabel task {i.relabel_task_id} queued", i)
            )
        if i.review_requested_at:
            events.append(
                HistoryEvent(
                    i.review_requested_at,
                    "review",
                    f"tie: review task {i.review_task_id} queued",
                    i,
                )
            )
        if i.closed_at:
            who = f" by {i.adjudicated_by}" if i.adjudicated_by else ""
            events.append(
                HistoryEvent(
                    i.closed_at, "closed", f"issue {i.get_status_display().lower()}{who}", i
                )
            )
    for d in ReviewDecision.objects.filter(clip=clip).select_related("reviewer"):
        events.append(
            HistoryEvent(
                d.created_at, "decision", f"{d.reviewer}: {d.get_decision_display().lower()}", d
            )
        )
    for t in Task.objects.filter(clip=clip).order_by("created_at"):
        events.append(
            HistoryEvent(
                t.created_at, f"task:{t.kind}", f"{t.kind} task {t.pk} ({t.reason}, {t.status})", t
            )
        )
    events.sort(key=lambda e: e.at)
    return {
        "given": [index.by_id[n] for n in sorted(given) if n in index.by_id],
        "consensus": consensus,
        "consensus_nodes": [index.by_id[n] for n in sorted(cons_ids) if n in index.by_id],
        "issues": issues,
        "live_issue": live,
        "model_version": mv,
        "has_probs": probs is not None,
        "tree": tree,
        "history": events,
    }


# --- jobs (the jobs page and API) -----------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """One background job as the jobs page and API show it, whatever its kind."""

    kind: str  # import | features | training | cycle | run
    id: int
    name: str
    status: str
    progress: str
    worker: str
    worker_pid: int | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    stale: bool  # running, and its heartbeat older than REFRAIN_JOB_STALE_SECONDS
    attempts: int
    notes: list[dict[str, Any]]
    error: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    # Items done (or failed) of the total, for a progress bar: a feature set's clips, a cycle's
    # steps; None where the job does not count its work (an import's source size is not stored).
    done: int | None = None
    total: int | None = None
    # What its workers logged for it, newest last (refrain.jobs keeps the row's last characters).
    log_tail: str = ""

    @property
    def log_lines(self) -> list[str]:
        """The newest lines of the log, for the page."""
        return self.log_tail.splitlines()[-JOB_LOG_LINES:]

    @property
    def percent(self) -> int | None:
        if self.done is None or not self.total:
            return None
        return max(0, min(100, round(100 * self.done / self.total)))


#: Lines of a job's log the jobs page shows (the API gives the whole tail).
JOB_LOG_LINES = 12

JOB_KINDS: tuple[tuple[str, str], ...] = (
    ("imports", "Imports"),
    ("feature_sets", "Feature sets"),
    ("trainings", "Trainings"),
    ("cycles", "Relabel cycles"),
    ("runs", "Detection runs"),
)


def _held(
    kind: str,
    row: Any,
    *,
    name: str,
    progress: str,
    now: datetime,
    stale_s: float,
    done: int | None = None,
    total: int | None = None,
) -> JobRow:
    hb = row.heartbeat_at
    age = (now - hb).total_seconds() if hb else None
    return JobRow(
        kind=kind,
        id=row.pk,
        name=name,
        status=row.status,
        progress=progress,
        worker=row.worker,
        worker_pid=row.worker_pid,
        heartbeat_at=hb,
        heartbeat_age_s=round(age, 1) if age is not None else None,
        stale=row.status == "running" and bool(row.worker) and age is not None and age > stale_s,
        attempts=row.attempts,
        notes=list(row.sweep_notes),
        error=row.error,
        created_at=getattr(row, "created_at", None) or getattr(row, "started_at", None),
        started_at=getattr(row, "started_at", None),
        finished_at=row.finished_at,
        done=done,
        total=total,
        log_tail=row.log_tail,
    )


def jobs_overview(*, project: Project, limit: int = 20) -> dict[str, list[JobRow]]:
    """The project's recent jobs of every kind, newest first: five queries, large JSON left out."""
    from django.conf import settings

    now = timezone.now()
    stale_s = float(settings.REFRAIN_JOB_STALE_SECONDS)
    held = ("status", "worker", "worker_pid", "heartbeat_at", "sweep_notes", "error", "log_tail")
    held += ("attempts", "created_at", "finished_at")
    imports = ImportJob.objects.filter(project=project).only(
        *(f for f in held if f != "created_at"),
        "source",
        "started_at",
        "items_done",
        "n_imported",
        "n_duplicate",
        "n_failed",
        "n_labels",
    )
    feature_sets = FeatureSet.objects.filter(project=project).only(
        *held, "backend", "n_clips", "n_done", "n_failed"
    )
    trainings = ModelVersion.objects.filter(project=project).only(
        *held, "number", "kind", "trigger", "n_folds", "started_at"
    )
    cycles = QualityCycle.objects.filter(project=project).only(
        *held, "trigger", "steps_done", "started_at"
    )
    runs = QualityRun.objects.filter(project=project).only(
        *held, "cycle_id", "n_issues", "n_routed", "started_at"
    )
    n_steps = len(QualityCycle.STEPS)
    return {
        "imports": [
            _held(
                "import",
                j,
                name=j.source,
                progress=f"{j.n_imported} imported, {j.n_duplicate} duplicate, {j.n_failed} failed",
                now=now,
                stale_s=stale_s,
            )
            for j in imports.order_by("-started_at")[:limit]
        ],
        "feature_sets": [
            _held(
                "features",
                fs,
                name=fs.backend,
                progress=f"{fs.n_done + fs.n_failed}/{fs.n_clips} clips ({fs.n_failed} failed)",
                now=now,
                stale_s=stale_s,
                done=fs.n_done + fs.n_failed,
                total=fs.n_clips,
            )
            for fs in feature_sets.order_by("-created_at")[:limit]
        ],
        "trainings": [
            _held(
                "training",
                mv,
                name=f"v{mv.number} {mv.kind} ({mv.trigger}, {mv.n_folds}-fold)",
                progress=mv.status,
                now=now,
                stale_s=stale_s,
            )
            for mv in trainings.order_by("-created_at")[:limit]
        ],
        "cycles": [
            _held(
                "cycle",
                c,
                name=f"cycle {c.pk} ({c.trigger})",
                progress=f"{len(c.steps_done)}/{n_steps} steps"
                + (f": {', '.join(c.steps_done)}" if c.steps_done else ""),
                now=now,
                stale_s=stale_s,
                done=len(c.steps_done),
                total=n_steps,
            )
            for c in cycles.order_by("-created_at")[:limit]
        ],
        "runs": [
            _held(
                "run",
                r,
                name=f"run {r.pk}" + (f" (cycle {r.cycle_id})" if r.cycle_id else ""),
                progress=f"{r.n_issues} issues, {r.n_routed} routed",
                now=now,
                stale_s=stale_s,
            )
            for r in runs.order_by("-created_at")[:limit]
        ],
    }


def model_probs_rows(
    *, model_version: ModelVersion, hierarchy: Hierarchy, clip_ids: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) hierarchy-consistent probabilities of ``clip_ids`` (rows of absent clips are zero) and
    the (n,) present mask; reads only those rows of the memory-mapped matrix."""
    all_ids, probs, _oos = prediction_matrix(model_version=model_version)
    pos = {int(c): i for i, c in enumerate(np.asarray(all_ids, dtype=np.int64))}
    rows = np.array([pos.get(c, -1) for c in clip_ids], dtype=np.int64)
    present = rows >= 0
    out = np.zeros((len(clip_ids), probs.shape[1]), dtype=np.float64)
    if present.any():
        picked = np.asarray(probs[np.sort(rows[present])], dtype=np.float64)
        order = np.argsort(np.argsort(rows[present]))
        out[present] = hierarchy.make_consistent(np.clip(picked[order], 0.0, 1.0))
    return out, present
