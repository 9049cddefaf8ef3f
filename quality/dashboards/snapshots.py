"""The console's precomputed aggregates: computed by a worker, one :class:`DashboardSnapshot` row per
page, so a page reads one row instead of scanning 500k annotations per request.

What lives here and why it is not read live:

- ``progress``: daily series over every annotation (first and second opinion per clip, per
  annotator per day, median time): GROUP BYs over the whole annotation table.
- ``taxonomy``: the label that stands for every clip (``current_labels``, the one reader) counted
  over the tree, with the mean consensus quality per node.
- ``annotators``: pairwise agreement, agreement with the consensus (a beta interval), confusions by
  depth: every annotator's latest label set on every clip.
- ``models``: the newest model's confusion per taxonomy level (its out-of-sample probabilities
  against the labels that stand).
- ``learning``: annotations spent when each model version was trained, the acquisition strategy
  that picked what was labelled before it, and the project's stored simulation curves.

Everything is aggregated in SQL where SQL can (date truncation, GROUP BY, a median on
PostgreSQL); the per-clip work that needs the taxonomy (label sets, paths) runs once per refresh.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from active_learning.artifacts import ArtifactStorageError, artifact_read
from active_learning.models import JobStatus, ModelVersion
from annotation.models import Annotation, AnnotationLabel, Clip, Project, Task
from annotation.selectors import TaxonomyIndex, current_labels, taxonomy_index_cached
from quality.models import AnnotatorQuality, ClipConsensus, DashboardSnapshot, QualityCycle
from quality.selectors import latest_done_model, model_probs
from refrain.jobs import delay_on_commit_or_log
from taxonomy.hierarchy import Hierarchy
from taxonomy.paths import most_probable_path

logger = logging.getLogger(__name__)

PAGES: tuple[str, ...] = ("progress", "taxonomy", "annotators", "models", "learning")

#: A node with fewer labelled clips than this is flagged "too few for the model": with the
#: default 5-fold cross-validation it has fewer than two clips in each held-out fold.
FEW_LABELS = 10
#: Days of the per-annotator daily series kept in the snapshot (the figure shows them all).
ANNOTATOR_DAYS = 90
#: Days over which the labelling pace (for the queue's ETA) is measured.
PACE_DAYS = 7
#: Confusions kept per annotator and depth.
TOP_CONFUSIONS = 3
#: Where a project's simulation curves are stored: ``bench.acq_simulate``'s JSON (its ``summary``
#: section, ``{experiment: {strategy: {spent, hier_f1_mean, hier_f1_std}}}``), under the project's
#: artifact folder.
SIMULATION_FILE = "simulation.json"

NONE = "(none)"


# --- small SQL helpers ----------------------------------------------------------------------------


def _day_sql(expr: str) -> str:
    """SQL for the UTC calendar day of a timestamp expression, on PostgreSQL or SQLite."""
    if connection.vendor == "postgresql":
        return f"(({expr}) AT TIME ZONE 'UTC')::date"
    return f"date({expr})"


def _rows(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _iso(d: Any) -> str:
    return d.isoformat() if isinstance(d, date | datetime) else str(d)


def _medians_seconds(project: Project) -> dict[int | None, float]:
    """Median ``time_spent_ms`` in seconds per annotator (key None: everyone), user annotations."""
    ann, clip = Annotation._meta.db_table, Clip._meta.db_table
    where = (
        f"FROM {ann} a JOIN {clip} c ON c.id = a.clip_id WHERE c.project_id = %s "
        "AND a.user_id IS NOT NULL AND a.time_spent_ms IS NOT NULL AND a.kind <> 'review'"
    )
    if connection.vendor == "postgresql":
        med = "percentile_cont(0.5) WITHIN GROUP (ORDER BY a.time_spent_ms)"
        out: dict[int | None, float] = {
            uid: float(m) / 1000.0
            for uid, m in _rows(f"SELECT a.user_id, {med} {where} GROUP BY a.user_id", [project.pk])
        }
        overall = _rows(f"SELECT {med} {where}", [project.pk])
        if overall and overall[0][0] is not None:
            out[None] = float(overall[0][0]) / 1000.0
        return out
    # SQLite (the embedded demo) has no percentile: its projects are small.
    values: dict[int, list[int]] = defaultdict(list)
    for uid, ms in _rows(f"SELECT a.user_id, a.time_spent_ms {where}", [project.pk]):
        values[uid].append(ms)
    res: dict[int | None, float] = {u: float(np.median(v)) / 1000.0 for u, v in values.items()}
    everything = [m for v in values.values() for m in v]
    if everything:
        res[None] = float(np.median(everything)) / 1000.0
    return res


# --- progress -------------------------------------------------------------------------------------


def progress_payload(*, project: Project) -> dict[str, Any]:
    """Daily series: clips getting their first and second opinion, relabel tasks queued and
    answered, annotations per annotator per day; median time per annotation; the recent pace."""
    ann, clip = Annotation._meta.db_table, Clip._meta.db_table
    base = (
        f"FROM {ann} a JOIN {clip} c ON c.id = a.clip_id "
        "WHERE c.project_id = %s AND a.kind <> 'review'"
    )
    first = _rows(
        f"SELECT d, COUNT(*) FROM (SELECT {_day_sql('MIN(a.created_at)')} AS d {base} "
        "GROUP BY a.clip_id) t GROUP BY d ORDER BY d",
        [project.pk],
    )
    second = _rows(
        f"SELECT d, COUNT(*) FROM (SELECT {_day_sql('a.created_at')} AS d, ROW_NUMBER() OVER "
        f"(PARTITION BY a.clip_id ORDER BY a.created_at, a.id) AS rn {base}) t "
        "WHERE rn = 2 GROUP BY d ORDER BY d",
        [project.pk],
    )
    relabels = Task.objects.filter(project=project, kind=Task.Kind.RELABEL)
    queued = relabels.annotate(d=TruncDate("created_at")).values_list("d").annotate(n=Count("pk"))
    answered = (
        relabels.filter(completed_at__isnull=False)
        .annotate(d=TruncDate("completed_at"))
        .values_list("d")
        .annotate(n=Count("pk"))
    )
    days: dict[str, dict[str, int]] = defaultdict(
        lambda: {"labelled": 0, "second": 0, "relabel_queued": 0, "relabel_answered": 0}
    )
    for rows, col in (
        (first, "labelled"),
        (second, "second"),
        (list(queued.order_by()), "relabel_queued"),
        (list(answered.order_by()), "relabel_answered"),
    ):
        for d, n in rows:
            days[_iso(d)][col] += int(n)
    since = timezone.now() - timedelta(days=ANNOTATOR_DAYS)
    per_user = (
        Annotation.objects.filter(clip__project=project, user__isnull=False, created_at__gte=since)
        .exclude(kind=Annotation.Kind.REVIEW)
        .annotate(d=TruncDate("created_at"))
        .values_list("user_id", "user__username", "d")
        .annotate(n=Count("pk"))
        .order_by("user__username", "d")
    )
    medians = _medians_seconds(project)
    recent = (
        Annotation.objects.filter(
            clip__project=project, created_at__gte=timezone.now() - timedelta(days=PACE_DAYS)
        )
        .exclude(kind=Annotation.Kind.REVIEW)
        .count()
    )
    return {
        "daily": [{"day": d, **days[d]} for d in sorted(days)],
        "per_annotator_day": [
            {"user_id": u, "annotator": name, "day": _iso(d), "n": n} for u, name, d, n in per_user
        ],
        "median_seconds": medians.get(None),
        "pace_per_day": recent / PACE_DAYS,
        "pace_days": PACE_DAYS,
        "n_clips": Clip.objects.filter(project=project, status=Clip.Status.READY).count(),
    }


# --- taxonomy -------------------------------------------------------------------------------------


def taxonomy_payload(*, project: Project) -> dict[str, Any]:
    """The labels that stand, counted per node (ancestor-closed: a clip counts for every node of its
    label set), the clips whose deepest label on a path is the node (the sunburst's sizes), and the
    mean consensus quality of the clips under each node."""
    index = taxonomy_index_cached(project.taxonomy_version)
    k = len(index.nodes)
    parents = index.parents_array
    current = current_labels(project=project)
    quality = dict(
        ClipConsensus.objects.filter(project=project, quality__isnull=False).values_list(
            "clip_id", "quality"
        )
    )
    count = np.zeros(k, dtype=np.int64)
    deepest = np.zeros(k, dtype=np.int64)
    q_sum = np.zeros(k)
    q_n = np.zeros(k, dtype=np.int64)
    n_used = 0
    for clip_id, node_ids, foreign in zip(
        current.clip_ids, current.node_ids, current.foreign, strict=True
    ):
        if foreign:
            continue
        cols = {index.by_id[n].index for n in node_ids if n in index.by_id}
        if not cols:
            continue
        n_used += 1
        idx = np.fromiter(cols, dtype=np.int64)
        count[idx] += 1
        has_child = {int(parents[c]) for c in cols if parents[c] >= 0}
        deepest[[c for c in cols if c not in has_child]] += 1
        q = quality.get(clip_id)
        if q is not None:
            q_sum[idx] += q
            q_n[idx] += 1
    nodes = []
    for node in index.nodes:
        i = node.index
        parent = index.by_id[node.parent_id].key if node.parent_id else ""
        nodes.append(
            {
                "key": node.key,
                "name": node.name,
                "path": node.path,
                "parent": parent,
                "depth": node.depth,
                "n": int(count[i]),
                "deepest": int(deepest[i]),
                "quality": round(float(q_sum[i] / q_n[i]), 4) if q_n[i] else None,
            }
        )
    return {"nodes": nodes, "n_clips": n_used, "few": FEW_LABELS}


# --- annotators -----------------------------------------------------------------------------------


def _latest_label_sets(
    project: Project, index: TaxonomyIndex
) -> tuple[dict[int, dict[int, frozenset[int]]], dict[int, str]]:
    """{clip: {user: its latest label set (node ids)}} over people's annotations on the project's
    taxonomy version (reviews left out), and the annotators' usernames."""
    latest: dict[tuple[int, int], int] = {}
    names: dict[int, str] = {}
    qs = (
        Annotation.objects.filter(
            clip__project=project,
            clip__status=Clip.Status.READY,
            user__isnull=False,
            taxonomy_version=index.version,
        )
        .exclude(kind=Annotation.Kind.REVIEW)
        .order_by("-created_at", "-id")
        .values_list("id", "clip_id", "user_id", "user__username")
    )
    for ann_id, clip_id, user_id, username in qs.iterator(chunk_size=20_000):
        latest.setdefault((clip_id, user_id), ann_id)
        names[user_id] = username
    by_ann = {a: key for key, a in latest.items()}
    sets: dict[int, set[int]] = defaultdict(set)
    labels = AnnotationLabel.objects.filter(
        annotation__clip__project=project, annotation__user__isnull=False
    ).values_list("annotation_id", "node_id")
    for ann_id, node_id in labels.iterator(chunk_size=50_000):
        if ann_id in by_ann:
            sets[ann_id].add(node_id)
    out: dict[int, dict[int, frozenset[int]]] = defaultdict(dict)
    for ann_id, (clip_id, user_id) in by_ann.items():
        out[clip_id][user_id] = frozenset(sets.get(ann_id, ()))
    return out, names


def beta_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Posterior mean and central interval of a rate after ``k`` successes in ``n`` trials, under a
    uniform Beta(1, 1) prior."""
    from scipy.stats import beta

    a, b = k + 1.0, n - k + 1.0
    tail = (1.0 - level) / 2.0
    return a / (a + b), float(beta.ppf(tail, a, b)), float(beta.ppf(1.0 - tail, a, b))


def annotators_payload(*, project: Project) -> dict[str, Any]:
    """Pairwise agreement (identical label sets on the clips both labelled), agreement with the
    consensus of clips several people labelled (with a beta interval), the most frequent
    confusions against that consensus at each depth, throughput, and CROWDLAB's quality."""
    index = taxonomy_index_cached(project.taxonomy_version)
    sets, names = _latest_label_sets(project, index)
    pair_n: Counter[tuple[int, int]] = Counter()
    pair_agree: Counter[tuple[int, int]] = Counter()
    for by_user in sets.values():
        if len(by_user) < 2:
            continue
        users = sorted(by_user)
        for i, u in enumerate(users):
            for v in users[i + 1 :]:
                pair_n[(u, v)] += 1
                pair_agree[(u, v)] += by_user[u] == by_user[v]
    consensus = {
        clip_id: frozenset(index.closure([n for n in node_ids if n in index.by_id]))
        for clip_id, node_ids in ClipConsensus.objects.filter(
            project=project, n_annotations__gte=2
        ).values_list("clip_id", "node_ids")
        if clip_id in sets and len(sets[clip_id]) >= 2
    }
    agree: Counter[int] = Counter()
    judged: Counter[int] = Counter()
    confusions: Counter[tuple[int, int, str, str]] = Counter()
    depth_of = {n.id: n.depth for n in index.nodes}
    path_of = {n.id: n.path for n in index.nodes}
    for clip_id, truth in consensus.items():
        truth_by_depth: dict[int, set[int]] = defaultdict(set)
        for n in truth:
            truth_by_depth[depth_of[n]].add(n)
        for user, given in sets[clip_id].items():
            judged[user] += 1
            if given == truth:
                agree[user] += 1
                continue
            given_by_depth: dict[int, set[int]] = defaultdict(set)
            for n in given:
                if n in depth_of:
                    given_by_depth[depth_of[n]].add(n)
            for d in set(truth_by_depth) | set(given_by_depth):
                said = given_by_depth[d] - truth_by_depth[d]
                meant = truth_by_depth[d] - given_by_depth[d]
                for s in said or {None}:
                    for m in meant or {None}:
                        if s is None and m is None:
                            continue
                        confusions[
                            (user, d, path_of[s] if s else NONE, path_of[m] if m else NONE)
                        ] += 1
    crowdlab = {
        u: (q, n)
        for u, q, n in AnnotatorQuality.objects.filter(project=project).values_list(
            "user_id", "quality", "n_annotations"
        )
    }
    medians = _medians_seconds(project)
    week = timezone.now() - timedelta(days=PACE_DAYS)
    totals = {
        u: (n, n_week)
        for u, n, n_week in Annotation.objects.filter(clip__project=project, user__isnull=False)
        .exclude(kind=Annotation.Kind.REVIEW)
        .values_list("user_id")
        .annotate(n=Count("pk"), n_week=Count("pk", filter=Q(created_at__gte=week)))
        .order_by()
    }
    users = sorted(names, key=lambda u: names[u])
    annotators = []
    for u in users:
        k, n = agree[u], judged[u]
        mean, lo, hi = beta_interval(k, n)
        q, q_n = crowdlab.get(u, (None, 0))
        n_all, n_week = totals.get(u, (0, 0))
        top: dict[str, list[dict[str, Any]]] = {}
        mine = [(key, c) for key, c in confusions.items() if key[0] == u]
        for (_, d, said, meant), c in sorted(mine, key=lambda kc: (kc[0][1], -kc[1], kc[0][2:])):
            rows = top.setdefault(str(d), [])
            if len(rows) < TOP_CONFUSIONS:
                rows.append({"given": said, "consensus": meant, "n": c})
        annotators.append(
            {
                "user_id": u,
                "annotator": names[u],
                "agree": k,
                "judged": n,
                "mean": round(mean, 4),
                "lo": round(lo, 4),
                "hi": round(hi, 4),
                "crowdlab": q,
                "crowdlab_n": q_n,
                "n": n_all,
                "n_week": n_week,
                "per_day_week": round(n_week / PACE_DAYS, 2),
                "median_seconds": medians.get(u),
                "confusions": top,
            }
        )
    return {
        "annotators": annotators,
        "pairs": [
            {
                "a": names[u],
                "b": names[v],
                "n": pair_n[(u, v)],
                "agree": pair_agree[(u, v)],
                "rate": round(pair_agree[(u, v)] / pair_n[(u, v)], 4),
            }
            for (u, v) in sorted(pair_n, key=lambda uv: (names[uv[0]], names[uv[1]]))
        ],
        "n_multi": sum(1 for s in sets.values() if len(s) >= 2),
        "pace_days": PACE_DAYS,
    }


# --- models ---------------------------------------------------------------------------------------


def models_payload(*, project: Project) -> dict[str, Any]:
    """The newest model's out-of-sample confusion at every depth: for each labelled clip, the node
    of its primary path (through its deepest chosen node) against the node of the model's most
    probable path at that depth. Stored as (depth, true key, predicted key, clips) counts."""
    mv = latest_done_model(project=project)
    if mv is None:
        return {"model": None, "cells": [], "n_clips": 0}
    index = taxonomy_index_cached(project.taxonomy_version)
    hier = Hierarchy(index.parents_array)
    try:
        probs = model_probs(model_version=mv, hierarchy=hier)
    except OSError as exc:  # artifacts deleted or on another host
        return {"model": mv.number, "cells": [], "n_clips": 0, "error": str(exc)}
    current = current_labels(project=project)
    rows, present = probs.rows_for(current.clip_ids)
    keys = [n.key for n in index.nodes]
    depth = hier.depth
    cells: Counter[tuple[int, str, str]] = Counter()
    use = [
        i
        for i in range(len(current.clip_ids))
        if present[i] and probs.out_of_sample[rows[i]] and not current.foreign[i]
    ]
    if use:
        path = most_probable_path(probs.pred_probs[rows[use]], hier)
        for j, i in enumerate(use):
            given = current.explicit[i] or current.node_ids[i]
            chosen = [index.by_id[n] for n in given if n in index.by_id]
            if not chosen:
                continue
            primary = max(chosen, key=lambda n: n.depth)  # as training: the first wins a tie
            true_path = [*index.ancestors[primary.id], primary.id]
            pred_cols = np.flatnonzero(path[j])
            pred_at = {int(depth[c]): keys[c] for c in pred_cols}
            for nid in true_path:
                node = index.by_id.get(nid)
                if node is None or node.depth not in pred_at:
                    continue
                cells[(node.depth, node.key, pred_at[node.depth])] += 1
    return {
        "model": mv.number,
        "model_id": mv.pk,
        "n_clips": len(use),
        "cells": [[d, t, p, n] for (d, t, p), n in sorted(cells.items())],
    }


# --- learning -------------------------------------------------------------------------------------


def _simulation_curves(project: Project) -> tuple[list[dict[str, Any]], str]:
    # In the artifacts storage (a folder or a bucket), beside the project's models.
    path = f"project_{project.pk}/{SIMULATION_FILE}"
    try:
        raw = artifact_read(path)
    except FileNotFoundError:
        return [], path
    except ArtifactStorageError as exc:
        logger.warning("simulation file %s not read: %s", path, exc)
        return [], path
    try:
        summary = json.loads(raw).get("summary") or {}
        curves = [
            {
                "experiment": str(exp),
                "strategy": str(strategy),
                "spent": [int(x) for x in s["spent"]],
                "mean": [float(x) for x in s["hier_f1_mean"]],
                "std": [float(x) for x in s.get("hier_f1_std") or [0.0] * len(s["spent"])],
            }
            for exp, by_strategy in summary.items()
            for strategy, s in by_strategy.items()
            if isinstance(s, dict) and "spent" in s and "hier_f1_mean" in s
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("unreadable simulation file %s: %s", path, exc)
        return [], str(path)
    return curves, str(path)


LEARNING_METRICS: tuple[str, ...] = ("hier_f1", "leaf_accuracy", "top_level_accuracy", "mAP")


def learning_payload(*, project: Project) -> dict[str, Any]:
    """Each finished model version: its out-of-sample metrics, the annotations spent when it was
    trained, and the acquisition strategy that chose what was labelled since the version before
    (the strategy of the newest cycle whose acquisition finished before it; "initial labels"
    before any)."""
    versions = list(
        ModelVersion.objects.filter(project=project, status=JobStatus.DONE)
        .order_by("number")
        .values_list("pk", "number", "created_at", "n_labelled", "metrics")
    )
    spent: dict[str, int] = {}
    if versions:
        spent = (
            Annotation.objects.filter(clip__project=project)
            .exclude(kind=Annotation.Kind.REVIEW)
            .aggregate(
                **{
                    f"v{pk}": Count("pk", filter=Q(created_at__lte=at))
                    for pk, _, at, _, _ in versions
                }
            )
        )
    acquisitions = [
        (c.finished_at or c.created_at, str(c.results["acquire"].get("strategy", "?")))
        for c in QualityCycle.objects.filter(project=project)
        .only("created_at", "finished_at", "results", "steps_done")
        .order_by("created_at")
        if "acquire" in (c.steps_done or []) and isinstance(c.results.get("acquire"), dict)
    ]
    points = []
    for pk, number, at, n_labelled, metrics in versions:
        before = [s for t, s in acquisitions if t <= at]
        points.append(
            {
                "version": number,
                "spent": int(spent.get(f"v{pk}", 0)),
                "n_labelled": n_labelled,
                "strategy": before[-1] if before else "initial labels",
                **{m: (metrics or {}).get(m) for m in LEARNING_METRICS},
            }
        )
    curves, sim_path = _simulation_curves(project)
    return {"points": points, "simulations": curves, "simulation_path": sim_path}


# --- refresh --------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "progress": progress_payload,
    "taxonomy": taxonomy_payload,
    "annotators": annotators_payload,
    "models": models_payload,
    "learning": learning_payload,
}


def dashboards_refresh(*, project: Project, pages: tuple[str, ...] = PAGES) -> dict[str, float]:
    """Compute and store the snapshots of ``pages``; returns the seconds each took."""
    took: dict[str, float] = {}
    for page in pages:
        t0 = time.perf_counter()
        payload = BUILDERS[page](project=project)
        took[page] = round(time.perf_counter() - t0, 3)
        DashboardSnapshot.objects.update_or_create(
            project=project,
            page=page,
            defaults={"payload": payload, "computed_at": timezone.now(), "seconds": took[page]},
        )
    return took


def dashboards_refresh_request(*, project: Project, force: bool = False) -> bool:
    """Ask a worker to refresh the project's snapshots once (True) unless a request is already
    pending (False): a page that finds its snapshot missing or old calls this on every view;
    ``force`` (an admin's button) asks again even so."""
    from django.core.cache import cache

    # The task module imports this one: import it where it is sent.
    from quality.tasks import refresh_dashboards

    key = f"dashboards-refresh:{project.pk}"
    if force:
        cache.delete(key)
    if not cache.add(key, 1, timeout=REFRESH_DEDUPE_SECONDS):
        return False
    delay_on_commit_or_log(refresh_dashboards, project.pk)
    return True


#: How long a refresh request stands before a page may ask again (a lost message is re-asked).
REFRESH_DEDUPE_SECONDS = 300
