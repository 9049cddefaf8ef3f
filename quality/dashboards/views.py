"""The console's dashboard pages, for a project's reviewers and admins (annotators are blind to other
people's labels and the model's guess: 403; outsiders: 404, as on the quality dashboard).

Each page reads its snapshot (one row; a worker computes it, see ``snapshots``) plus a few cheap
live aggregates, builds its figures with ``figures`` and renders them server-side; plotly.js is
the vendored static file. A page whose snapshot is missing or old asks a worker for a fresh one
and says when what it shows was computed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pandas as pd
import plotly.graph_objects as go
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from active_learning.selectors import per_node_rows
from annotation.models import Membership, Project
from annotation.permissions import role_at_least
from annotation.selectors import taxonomy_index_cached
from annotation.views import project_role
from quality.dashboards import figures
from quality.dashboards import selectors as sel
from quality.dashboards.snapshots import (
    FEW_LABELS,
    LEARNING_METRICS,
    NONE,
    dashboards_refresh_request,
)
from quality.models import DashboardSnapshot
from refrain.errors import Invalid

Role = Membership.Role

#: The console's pages in navigation order: (url name, title).
PAGES: tuple[tuple[str, str], ...] = (
    ("dashboards-progress", "Progress"),
    ("dashboards-taxonomy", "Taxonomy"),
    ("dashboards-annotators", "Annotators"),
    ("dashboards-issues", "Issues over runs"),
    ("dashboards-models", "Models"),
    ("dashboards-learning", "Active learning"),
)
#: Most rows (and columns) a confusion heatmap shows; the most frequent labels are kept.
CONFUSION_MAX = 25


def explore_url(project: Project, node_key: str) -> str:
    """The clip explorer filtered to a taxonomy node (and its descendants)."""
    return f"/p/{project.slug}/explore/?{urlencode({'node': node_key})}"


def _html(fig: go.Figure, div_id: str) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id))


def _snapshot(project: Project, page: str) -> DashboardSnapshot | None:
    snap = sel.snapshot_get(project=project, page=page)
    if sel.snapshot_is_stale(snap):
        dashboards_refresh_request(project=project)
    return snap


def _render(
    request: HttpRequest,
    membership: Membership,
    *,
    template: str,
    title: str,
    snapshot: DashboardSnapshot | None,
    figs: dict[str, go.Figure],
    **extra: Any,
) -> HttpResponse:
    project = membership.project
    return render(
        request,
        template,
        {
            "project": project,
            "membership": membership,
            "tab": "dashboards",
            "title": title,
            "pages": [(reverse(name, args=[project.slug]), label) for name, label in PAGES],
            "snapshot": snapshot,
            "can_refresh": role_at_least(membership, Role.ADMIN),
            "figs": figs,
            "figures": [(name, _html(fig, f"fig-{name}")) for name, fig in figs.items()],
            **extra,
        },
    )


def _payload(snapshot: DashboardSnapshot | None) -> dict[str, Any]:
    return snapshot.payload if snapshot is not None else {}


def _int_param(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name, "").strip()
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} must be a whole number, not {raw[:40]!r}") from None


# --- 1. progress ----------------------------------------------------------------------------------


@project_role(Role.REVIEWER)
def progress(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Labelling over time, the open queue by kind and source, the pace and the queue's ETA."""
    project = membership.project
    snap = _snapshot(project, "progress")
    data = _payload(snap)
    daily = pd.DataFrame(
        data.get("daily", []),
        columns=["day", "labelled", "second", "relabel_queued", "relabel_answered"],
    )
    per_user = pd.DataFrame(
        data.get("per_annotator_day", []), columns=["user_id", "annotator", "day", "n"]
    )
    queue = sel.queue_depth_frame(project=project)
    left = int(queue["left"].sum()) if not queue.empty else 0
    pace = float(data.get("pace_per_day") or 0.0)
    stats = {
        "clips": data.get("n_clips"),
        "labelled": int(daily["labelled"].sum()) if not daily.empty else 0,
        "second": int(daily["second"].sum()) if not daily.empty else 0,
        "open_tasks": int(queue["tasks"].sum()) if not queue.empty else 0,
        "opinions_left": left,
        "median_seconds": data.get("median_seconds"),
        "pace_per_day": round(pace, 1) if snap else None,
        "pace_days": data.get("pace_days", 7),
        "eta_days": (round(left / pace, 1) if pace > 0 else None) if left else 0,
    }
    figs = {
        "progress": figures.progress_figure(daily),
        "queue": figures.queue_depth_figure(queue),
        "per-annotator": figures.annotator_daily_figure(per_user),
    }
    return _render(
        request,
        membership,
        template="quality/dashboards/progress.html",
        title="Progress",
        snapshot=snap,
        figs=figs,
        stats=stats,
    )


# --- 2. taxonomy ----------------------------------------------------------------------------------


@project_role(Role.REVIEWER)
def taxonomy(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The label distribution over the tree; a click opens the explorer on the node."""
    project = membership.project
    snap = _snapshot(project, "taxonomy")
    data = _payload(snap)
    nodes = pd.DataFrame(
        data.get("nodes", []),
        columns=["key", "name", "path", "parent", "depth", "n", "deepest", "quality"],
    )
    few = int(data.get("few", FEW_LABELS))
    urls = [explore_url(project, k) for k in nodes["key"]]
    fig = figures.taxonomy_sunburst(nodes, few=few, explore_urls=urls)
    sparse = [
        {**row, "url": url}
        for row, url in zip(nodes.to_dict("records"), urls, strict=True)
        if row["n"] < few
    ]
    return _render(
        request,
        membership,
        template="quality/dashboards/taxonomy.html",
        title="Taxonomy",
        snapshot=snap,
        figs={"sunburst": fig},
        few=few,
        sparse=sparse,
        n_clips=data.get("n_clips", 0),
    )


# --- 3. annotators --------------------------------------------------------------------------------


@project_role(Role.REVIEWER)
def annotators(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Pairwise agreement, estimated quality with its interval, confusions, throughput."""
    project = membership.project
    snap = _snapshot(project, "annotators")
    data = _payload(snap)
    people = pd.DataFrame(
        data.get("annotators", []),
        columns=[
            "annotator",
            "agree",
            "judged",
            "mean",
            "lo",
            "hi",
            "crowdlab",
            "n",
            "n_week",
            "per_day_week",
            "median_seconds",
            "confusions",
        ],
    )
    pairs = pd.DataFrame(data.get("pairs", []), columns=["a", "b", "n", "agree", "rate"])
    names = list(people["annotator"])
    days = int(data.get("pace_days", 7))
    figs = {
        "agreement": figures.agreement_figure(pairs, names),
        "quality": figures.annotator_quality_figure(people),
        "throughput": figures.throughput_figure(people, days=days),
    }
    return _render(
        request,
        membership,
        template="quality/dashboards/annotators.html",
        title="Annotators",
        snapshot=snap,
        figs=figs,
        people=data.get("annotators", []),
        n_multi=data.get("n_multi", 0),
        none_label=NONE,
        pace_days=days,
    )


# --- 4. label issues over runs --------------------------------------------------------------------


@project_role(Role.REVIEWER)
def issues(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Issues per run by type and depth, the nodes with the most suspects, and what the routed
    relabels concluded (the precision people judged next to the detector's expected one). All
    live: the issue table is small next to the annotations."""
    project = membership.project
    runs = sel.runs_frame(project=project)
    by_run = sel.issues_by_run_frame(project=project)
    outcomes = sel.relabel_outcomes_frame(project=project)
    figs = {
        "by-type": figures.issues_per_run_figure(by_run, runs, by="issue_type"),
        "by-depth": figures.issues_per_run_figure(by_run, runs, by="depth"),
        "nodes": figures.suspect_nodes_figure(sel.suspect_nodes_frame(project=project)),
        "outcomes": figures.relabel_outcomes_figure(outcomes, runs),
    }
    return _render(
        request,
        membership,
        template="quality/dashboards/issues.html",
        title="Label issues over runs",
        snapshot=None,
        figs=figs,
        outcomes=outcomes.astype(object).where(outcomes.notna(), None).to_dict("records"),
        live=True,
    )


# --- 5. models over time --------------------------------------------------------------------------


def _confusion_view(
    project: Project, data: dict[str, Any], level: int | None, parent_key: str
) -> dict[str, Any]:
    """Rows and columns of the confusion at ``level`` (or among ``parent_key``'s children), and
    the nodes one may drill into. Raises Invalid for an unknown level or node."""
    index = taxonomy_index_cached(project.taxonomy_version)
    max_depth = max((n.depth for n in index.nodes), default=0)
    parent = None
    if parent_key:
        parent = index.by_key.get(parent_key)
        if parent is None:
            raise Invalid(f"unknown taxonomy node {parent_key[:80]!r}")
        if parent.is_leaf:
            raise Invalid(f"{parent.path} is a leaf: there is no level below it")
        if level is not None and level != parent.depth + 1:
            raise Invalid(
                f"level {level} does not match node {parent.path} (its children are level {parent.depth + 1})"
            )
        level = parent.depth + 1
    level = 0 if level is None else level
    if not 0 <= level <= max_depth:
        raise Invalid(f"unknown level {level}; this taxonomy has levels 0 to {max_depth}")
    cells = pd.DataFrame(
        [c for c in data.get("cells", []) if c[0] == level], columns=["depth", "true", "pred", "n"]
    )
    names = {n.key: n.name for n in index.nodes}
    parent_of = {n.key: (index.by_id[n.parent_id].key if n.parent_id else "") for n in index.nodes}
    if parent is not None:
        cells = cells[cells["true"].map(parent_of) == parent.key]
        other = "another branch"
        cells = cells.assign(
            pred=cells["pred"].where(cells["pred"].map(parent_of) == parent.key, other)
        )
        names[other] = other
    if parent is None:
        names = {n.key: n.path for n in index.nodes}  # a leaf's name alone can be ambiguous
    # The most labelled genres of the level, shown in taxonomy order so branches stay together.
    order = {n.key: n.index for n in index.nodes}
    truth_n = cells.groupby("true")["n"].sum().sort_values(ascending=False)
    rows = sorted(truth_n.index[:CONFUSION_MAX], key=lambda k: order.get(k, len(order)))
    pred_n = cells.groupby("pred")["n"].sum().sort_values(ascending=False)
    extra = [p for p in pred_n.index if p not in rows][: max(0, CONFUSION_MAX - len(rows))]
    cols = rows + sorted(extra, key=lambda k: order.get(k, len(order)))
    drill = [
        {"key": k, "name": names.get(k, k), "url": f"?{urlencode({'parent': k})}"}
        for k in rows
        if k in index.by_key and not index.by_key[k].is_leaf
    ]
    where = f"children of {parent.path}" if parent is not None else f"level {level}"
    return {
        "cells": cells,
        "rows": rows,
        "cols": cols,
        "names": names,
        "title": f"Confusion at {where} (model v{data.get('model')}, {data.get('n_clips', 0)} clips out-of-sample)",
        "level": level,
        "levels": list(range(max_depth + 1)),
        "parent": parent,
        "drill": drill,
        "truncated": len(truth_n) > CONFUSION_MAX,
    }


@project_role(Role.REVIEWER)
def models(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Metrics per version, a confusion per taxonomy level (``?level=<depth>``, or drill into a
    node's children with ``?parent=<node key>``), the near-chance genres of the newest model."""
    project = membership.project
    level = _int_param(request, "level")
    parent_key = request.GET.get("parent", "").strip()
    snap = _snapshot(project, "models")
    data = _payload(snap)
    conf = _confusion_view(project, data, level, parent_key)
    newest = sel.newest_model_for_report(project=project)
    near = [r for r in per_node_rows(model_version=newest) if r["near_chance"]] if newest else []
    figs = {
        "metrics": figures.model_metrics_figure(sel.model_metrics_frame(project=project)),
        "confusion": figures.confusion_figure(
            conf["cells"][["true", "pred", "n"]],
            rows=conf["rows"],
            cols=conf["cols"],
            names=conf["names"],
            title=conf["title"],
        ),
        "near-chance": figures.near_chance_figure(near),
    }
    stale_model = bool(newest and data.get("model") is not None and data["model"] != newest.number)
    return _render(
        request,
        membership,
        template="quality/dashboards/models.html",
        title="Models over time",
        snapshot=snap,
        figs=figs,
        conf=conf,
        newest=newest,
        near=near,
        stale_model=stale_model,
    )


# --- 6. active learning ---------------------------------------------------------------------------


@project_role(Role.REVIEWER)
def learning(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The project's learning curve per acquisition strategy (``?metric=``), and the simulation
    curves stored for the project, if any."""
    project = membership.project
    metric = request.GET.get("metric", "hier_f1")
    if metric not in LEARNING_METRICS:
        raise Invalid(f"unknown metric {metric[:40]!r}; use one of {', '.join(LEARNING_METRICS)}")
    snap = _snapshot(project, "learning")
    data = _payload(snap)
    points = pd.DataFrame(
        data.get("points", []),
        columns=["version", "spent", "n_labelled", "strategy", *LEARNING_METRICS],
    )
    sims = data.get("simulations", [])
    figs = {"curve": figures.learning_curve_figure(points, sims, metric=metric)}
    return _render(
        request,
        membership,
        template="quality/dashboards/learning.html",
        title="Active learning",
        snapshot=snap,
        figs=figs,
        metric=metric,
        metrics=LEARNING_METRICS,
        points=data.get("points", []),
        simulations=sims,
        simulation_path=data.get("simulation_path", ""),
        strategy=project.loop_policy.get_acquisition_strategy_display(),
    )


@require_POST
@project_role(Role.ADMIN)
def refresh(request: HttpRequest, membership: Membership) -> HttpResponse:
    """An admin's "Recompute now": ask a worker for fresh snapshots, come back to the page."""
    dashboards_refresh_request(project=membership.project, force=True)
    messages.info(request, "Asked the workers to recompute the dashboards; reload in a moment.")
    back = request.POST.get("next", "")
    slug = membership.project.slug
    if not back.startswith(f"/p/{slug}/dashboards/"):
        back = reverse("dashboards-progress", args=[slug])
    return redirect(back)
