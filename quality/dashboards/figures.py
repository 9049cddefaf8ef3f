"""The console's figures: DataFrames (or plain lists) in, plotly figures out; no queries here.

Each function documents the columns it reads. An empty frame gives a small figure that says why
it is empty, so a page never shows a blank box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# The empty template and plotly.js's own defaults (a white plot, light grid), styled here: a
# named template such as "plotly_white" is deep-copied and validated into every figure, about
# 20 ms a figure, most of a page's render time.
BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "height": 340,
    "template": "none",
    "font": {
        "family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
        "color": "#2a3f5f",
    },
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff",
    "xaxis": {"gridcolor": "#ebf0f8", "zerolinecolor": "#ebf0f8", "automargin": True},
    "yaxis": {"gridcolor": "#ebf0f8", "zerolinecolor": "#ebf0f8", "automargin": True},
    "legend": {"orientation": "h", "y": -0.2},
}
_LAYOUT = BASE_LAYOUT

QUALITY_SCALE = "RdYlGn"
FEW_COLOUR = "#b42318"


def _style(fig: go.Figure, **layout: Any) -> None:
    """``fig.update_layout`` with the shared style; dict-valued keys (axes, margins) merge."""
    merged = dict(_LAYOUT)
    for key, value in layout.items():
        base = merged.get(key)
        merged[key] = (
            {**base, **value} if isinstance(value, dict) and isinstance(base, dict) else value
        )
    fig.update_layout(**merged)


def empty_figure(title: str, hint: str = "no data yet") -> go.Figure:
    fig = go.Figure()
    _style(
        fig,
        title=title,
        annotations=[{"text": hint, "showarrow": False, "font": {"color": "#6b7280"}}],
        xaxis={"visible": False},
        yaxis={"visible": False},
        height=180,
    )
    return fig


# --- progress -------------------------------------------------------------------------------------


def progress_figure(daily: pd.DataFrame) -> go.Figure:
    """Cumulative clips labelled, clips with a second opinion, and relabel tasks open, per day.

    Columns: day, labelled, second, relabel_queued, relabel_answered (counts of that day).
    """
    title = "Clips labelled, in consensus and in relabel over time"
    if daily.empty:
        return empty_figure(title, "nobody has labelled a clip yet")
    df = daily.sort_values("day")
    days = pd.to_datetime(df["day"])
    fig = go.Figure()
    fig.add_scatter(x=days, y=df["labelled"].cumsum(), name="clips labelled", mode="lines+markers")
    fig.add_scatter(
        x=days, y=df["second"].cumsum(), name="clips with ≥ 2 opinions", mode="lines+markers"
    )
    fig.add_scatter(
        x=days,
        y=(df["relabel_queued"].cumsum() - df["relabel_answered"].cumsum()).clip(lower=0),
        name="relabel tasks open",
        mode="lines+markers",
    )
    _style(fig, title=title, yaxis_title="clips / tasks")
    return fig


def queue_depth_figure(df: pd.DataFrame) -> go.Figure:
    """Open tasks by source, stacked by kind. Columns: kind, source, tasks, left."""
    title = "Open queue by task kind and source"
    if df.empty:
        return empty_figure(title, "the queue is empty")
    fig = go.Figure()
    for kind, part in df.groupby("kind", sort=True):
        fig.add_bar(
            x=part["source"],
            y=part["tasks"],
            name=str(kind),
            customdata=part["left"],
            hovertemplate="%{x}: %{y} tasks, %{customdata} opinions wanted<extra>"
            + str(kind)
            + "</extra>",
        )
    _style(fig, title=title, barmode="stack", yaxis_title="open tasks")
    return fig


def annotator_daily_figure(df: pd.DataFrame) -> go.Figure:
    """Annotations per annotator per day: one heatmap row per annotator (one trace, however many
    annotators: fifty stacked bar traces would cost a page most of its time and all legibility).

    Columns: annotator, day, n.
    """
    title = "Annotations per annotator per day"
    if df.empty:
        return empty_figure(title, "no annotations by people in the last 90 days")
    table = df.pivot_table(
        index="annotator", columns="day", values="n", aggfunc="sum", fill_value=0
    )
    table = table.sort_index().reindex(sorted(table.columns), axis=1)
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=[str(d) for d in table.columns],
            y=[str(a) for a in table.index],
            colorscale="Blues",
            hovertemplate="%{y} on %{x}: %{z} annotations<extra></extra>",
            colorbar={"title": {"text": "annotations"}},
        )
    )
    _style(
        fig,
        title=title,
        xaxis={"type": "category", "title": "day"},
        yaxis={"autorange": "reversed"},
        height=max(300, 22 * len(table.index) + 150),
    )
    return fig


# --- taxonomy -------------------------------------------------------------------------------------


def taxonomy_sunburst(nodes: pd.DataFrame, *, few: int, explore_urls: Sequence[str]) -> go.Figure:
    """The label distribution over the tree, coloured by mean consensus quality.

    Columns: key, name, path, parent (key, "" for roots), n (clips under the node), deepest (clips
    whose deepest label on this path is the node: the sizes, as ``branchvalues="remainder"``
    adds each node's children), quality (mean consensus quality, None without one).
    Nodes with fewer than ``few`` labelled clips get a red outline. ``explore_urls[i]`` opens the
    clip explorer on node i (the page's script follows it on click).
    """
    title = "Labels over the taxonomy (colour: mean consensus quality; red outline: too few labels)"
    shown = nodes[nodes["n"] > 0]
    if shown.empty:
        return empty_figure(title, "no clip has a label yet")
    urls = pd.Series(list(explore_urls), index=nodes.index)[shown.index]
    q = shown["quality"].astype(float)
    colours = q.fillna(-1.0)  # below cmin: grey in the scale below
    outline = [FEW_COLOUR if n < few else "#ffffff" for n in shown["n"]]
    widths = [3 if n < few else 1 for n in shown["n"]]
    fig = go.Figure(
        go.Sunburst(
            ids=shown["key"],
            labels=shown["name"],
            parents=shown["parent"],
            values=shown["deepest"],
            branchvalues="remainder",
            customdata=np.stack(
                [shown["n"], q.round(3).astype(object).where(q.notna(), "–"), urls], axis=1
            ),
            hovertemplate="<b>%{id}</b><br>%{customdata[0]} clips<br>"
            "mean consensus quality %{customdata[1]}<extra></extra>",
            marker={
                "colors": colours,
                "colorscale": [
                    [0.0, "#d0d5dd"],
                    [0.0001, "#d73027"],
                    [0.5, "#fee08b"],
                    [1, "#1a9850"],
                ],
                "cmin": -0.0001,
                "cmax": 1.0,
                "line": {"color": outline, "width": widths},
                "showscale": True,
                "colorbar": {"title": {"text": "quality"}, "tickvals": [0, 0.5, 1]},
            },
            maxdepth=3,
            insidetextorientation="radial",
        )
    )
    _style(fig, title=title, height=560, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


# --- annotators -----------------------------------------------------------------------------------


def agreement_matrix(
    pairs: pd.DataFrame, annotators: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(M, M) agreement rates (NaN where two never labelled a clip in common, 1 on the diagonal)
    and (M, M) clips in common. Columns of ``pairs``: a, b, n, agree, rate."""
    pos = {a: i for i, a in enumerate(annotators)}
    m = len(annotators)
    rate = np.full((m, m), np.nan)
    n = np.zeros((m, m), dtype=np.int64)
    for row in pairs.itertuples(index=False):
        if row.a in pos and row.b in pos:
            i, j = pos[row.a], pos[row.b]
            rate[i, j] = rate[j, i] = row.rate
            n[i, j] = n[j, i] = row.n
    np.fill_diagonal(rate, 1.0)
    return rate, n


def agreement_figure(pairs: pd.DataFrame, annotators: Sequence[str]) -> go.Figure:
    """Heatmap of pairwise agreement: the share of the clips two annotators both labelled on which
    their label sets are identical. Columns of ``pairs``: a, b, n, agree, rate."""
    title = "Pairwise agreement (identical label sets on shared clips)"
    if pairs.empty:
        return empty_figure(title, "no clip was labelled by two annotators yet")
    rate, n = agreement_matrix(pairs, annotators)
    text = [
        [
            "" if i == j else ("–" if n[i, j] == 0 else f"{rate[i, j]:.2f}<br>{n[i, j]} clips")
            for j in range(len(annotators))
        ]
        for i in range(len(annotators))
    ]
    z = np.where(np.eye(len(annotators), dtype=bool), np.nan, rate)
    fig = go.Figure(
        go.Heatmap(
            z=np.round(z, 4),  # NaN (no clip in common, the diagonal) is drawn empty
            x=list(annotators),
            y=list(annotators),
            text=text,
            texttemplate="%{text}",
            colorscale=QUALITY_SCALE,
            zmin=0,
            zmax=1,
            hovertemplate="%{y} vs %{x}: %{z}<extra></extra>",
        )
    )
    side = max(340, 60 * len(annotators) + 140)
    _style(fig, title=title, height=side)
    fig.update_yaxes(autorange="reversed")
    return fig


def annotator_quality_figure(df: pd.DataFrame) -> go.Figure:
    """Each annotator's agreement with the consensus (posterior mean and 95 % beta interval), with
    CROWDLAB's quality where computed. Columns: annotator, mean, lo, hi, agree, judged, crowdlab."""
    title = "Estimated annotator quality (agreement with consensus, 95 % interval)"
    df = df[df["judged"] > 0] if not df.empty else df
    if df.empty:
        return empty_figure(title, "appears once clips have several annotators")
    df = df.sort_values("mean")
    fig = go.Figure()
    fig.add_scatter(
        x=df["mean"],
        y=df["annotator"],
        mode="markers",
        name="agreement with consensus",
        error_x={
            "type": "data",
            "symmetric": False,
            "array": df["hi"] - df["mean"],
            "arrayminus": df["mean"] - df["lo"],
        },
        customdata=np.stack([df["agree"], df["judged"], df["lo"], df["hi"]], axis=1),
        hovertemplate="%{y}: %{customdata[0]} of %{customdata[1]} agree; "
        "%{x:.2f} [%{customdata[2]:.2f}, %{customdata[3]:.2f}]<extra></extra>",
    )
    crowd = df[df["crowdlab"].notna()]
    if not crowd.empty:
        fig.add_scatter(
            x=crowd["crowdlab"],
            y=crowd["annotator"],
            mode="markers",
            marker={"symbol": "diamond", "size": 10},
            name="CROWDLAB quality",
        )
    _style(fig, title=title, xaxis={"range": [0, 1.02]})
    return fig


def throughput_figure(df: pd.DataFrame, *, days: int) -> go.Figure:
    """Annotations per day over the last ``days`` days per annotator, with the median seconds an
    annotation took. Columns: annotator, per_day_week, median_seconds, n."""
    title = f"Throughput (annotations per day, last {days} days)"
    if df.empty:
        return empty_figure(title)
    df = df.sort_values("annotator")
    text = [
        f"{m:.0f} s median" if isinstance(m, int | float) and not np.isnan(m) else ""
        for m in df["median_seconds"].astype(float)
    ]
    fig = go.Figure(
        go.Bar(x=df["annotator"], y=df["per_day_week"], text=text, name="annotations / day")
    )
    _style(fig, title=title, yaxis_title="annotations / day")
    return fig


# --- label issues over runs -----------------------------------------------------------------------


def _run_labels(runs: pd.DataFrame, ids: Sequence[int]) -> list[str]:
    created = dict(zip(runs["run"], runs["created"], strict=True)) if not runs.empty else {}
    return [
        f"run {r}" + (f" · {pd.Timestamp(created[r]):%b %d}" if r in created else "") for r in ids
    ]


def issues_per_run_figure(df: pd.DataFrame, runs: pd.DataFrame, *, by: str) -> go.Figure:
    """Issues per quality run, stacked by ``by`` ("issue_type" or "depth").

    Columns of ``df``: run, issue_type, depth, n; of ``runs``: run, created.
    """
    title = "Label issues per run by " + ("type" if by == "issue_type" else "depth")
    if df.empty:
        return empty_figure(title, "no quality run has found an issue yet")
    ids = sorted(df["run"].unique())
    labels = dict(zip(ids, _run_labels(runs, ids), strict=True))
    part_df = df.assign(depth=df["depth"].fillna(-1).astype(int))
    fig = go.Figure()
    for key, part in part_df.groupby(by, sort=True):
        sums = part.groupby("run")["n"].sum()
        name = str(key) if by == "issue_type" else ("no node" if key == -1 else f"depth {int(key)}")
        fig.add_bar(x=[labels[r] for r in sums.index], y=sums.values, name=name)
    _style(fig, title=title, barmode="stack", xaxis={"type": "category"})
    return fig


def suspect_nodes_figure(df: pd.DataFrame) -> go.Figure:
    """The nodes with the most suspects. Columns: path, n, live."""
    title = "Nodes with the most suspects (all runs)"
    if df.empty:
        return empty_figure(title)
    df = df.sort_values("n")
    fig = go.Figure()
    fig.add_bar(x=df["n"], y=df["path"], orientation="h", name="all issues")
    fig.add_bar(x=df["live"], y=df["path"], orientation="h", name="still live")
    _style(fig, title=title, barmode="overlay", height=max(340, 26 * len(df) + 120))
    return fig


def relabel_outcomes_figure(df: pd.DataFrame, runs: pd.DataFrame) -> go.Figure:
    """Routed relabels per run by outcome, with the precision people judged (confirmed over
    decided) next to the one the detector expected. Columns: run, confirmed, rejected, tie,
    waiting, precision, expected; of ``runs``: run, created."""
    title = "Routed relabels: what people concluded, and the detector's precision"
    if df.empty:
        return empty_figure(title, "no issue has been routed for a relabel yet")
    df = df.sort_values("run")
    x = _run_labels(runs, list(df["run"]))
    fig = go.Figure()
    colours = {
        "confirmed": "#1a9850",
        "rejected": "#d73027",
        "tie": "#fdae61",
        "waiting": "#bdbdbd",
    }
    for col, colour in colours.items():
        fig.add_bar(x=x, y=df[col], name=col, marker_color=colour)
    fig.add_scatter(
        x=x,
        y=df["precision"],
        name="precision (people)",
        yaxis="y2",
        mode="lines+markers",
        line={"color": "#1d2939"},
    )
    fig.add_scatter(
        x=x,
        y=df["expected"],
        name="expected precision (scores)",
        yaxis="y2",
        mode="lines+markers",
        line={"color": "#4f46e5", "dash": "dash"},
    )
    _style(
        fig,
        title=title,
        barmode="stack",
        xaxis={"type": "category"},
        yaxis={"title": "routed issues"},
        yaxis2={
            "title": "precision",
            "overlaying": "y",
            "side": "right",
            "range": [0, 1.05],
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "showgrid": False,
        },
    )
    return fig


# --- models ---------------------------------------------------------------------------------------


def model_metrics_figure(df: pd.DataFrame) -> go.Figure:
    """One line per metric across model versions. Columns: version, metric, value."""
    title = "Out-of-sample metrics per model version"
    if df.empty:
        return empty_figure(title, "no model has finished training yet")
    fig = go.Figure()
    for metric, part in df.sort_values("version").groupby("metric", sort=False):
        fig.add_scatter(x=part["version"], y=part["value"], name=str(metric), mode="lines+markers")
    _style(fig, title=title, xaxis_title="model version", yaxis_range=[0, 1.02])
    fig.update_xaxes(dtick=1)
    return fig


def confusion_figure(
    counts: pd.DataFrame,
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    names: dict[str, str],
    title: str,
) -> go.Figure:
    """Row-normalised confusion heatmap, counts as text. Columns of ``counts``: true, pred, n
    (keys); ``rows``/``cols`` fix the order; ``names`` maps keys to what the axes show."""
    if counts.empty or not rows:
        return empty_figure(title, "no out-of-sample prediction at this level")
    r_pos = {k: i for i, k in enumerate(rows)}
    c_pos = {k: j for j, k in enumerate(cols)}
    n = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for row in counts.itertuples(index=False):
        if row.true in r_pos and row.pred in c_pos:
            n[r_pos[row.true], c_pos[row.pred]] += row.n
    totals = n.sum(axis=1, keepdims=True)
    share = np.divide(n, totals, out=np.zeros(n.shape), where=totals > 0)
    fig = go.Figure(
        go.Heatmap(
            z=np.round(share, 4),
            x=[names.get(c, c) for c in cols],
            y=[names.get(r, r) for r in rows],
            text=n.tolist(),
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="true %{y} → predicted %{x}: %{text} clips (%{z:.0%} of the row)"
            "<extra></extra>",
        )
    )
    side = max(360, 28 * len(rows) + 160)
    _style(
        fig,
        title=title,
        xaxis_title="predicted (most probable path)",
        yaxis_title="label that stands",
        height=side,
        margin={"l": 160, "r": 20, "t": 50, "b": 60},
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def near_chance_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Sibling accuracy of each near-chance genre against its chance level. Rows from
    ``active_learning.selectors.per_node_rows`` with ``near_chance`` set."""
    title = "Near-chance genres: picked over their siblings (bars) vs chance (markers)"
    if not rows:
        return empty_figure(title, "no genre is near chance (or no model yet)")
    names = [r["path"] for r in rows]
    fig = go.Figure()
    fig.add_bar(
        y=names,
        x=[r["sibling_accuracy"] for r in rows],
        orientation="h",
        name="model",
        text=[f"{r['sibling_accuracy']:.2f} (chance {r['sibling_chance']:.2f})" for r in rows],
        textposition="outside",
    )
    fig.add_scatter(
        y=names,
        x=[r["sibling_chance"] for r in rows],
        mode="markers",
        marker={"symbol": "line-ns-open", "size": 18, "color": FEW_COLOUR},
        name="chance",
    )
    _style(
        fig,
        title=title,
        xaxis={"range": [0, 1], "title": "share picked first among siblings"},
        height=max(240, 28 * len(rows) + 160),
    )
    return fig


# --- active learning ------------------------------------------------------------------------------


def learning_curve_figure(
    points: pd.DataFrame, simulations: list[dict[str, Any]], *, metric: str
) -> go.Figure:
    """The project's own learning curve (``metric`` of each model version against the annotations
    spent when it was trained), one line per acquisition strategy, and any stored simulation
    curves (hierarchical F1 against annotations spent) dotted.

    Columns of ``points``: version, spent, strategy, and ``metric``.
    """
    title = f"Learning curve: {metric} (out-of-sample) against annotations spent"
    pts = points[points[metric].notna()] if not points.empty else points
    if pts.empty and not simulations:
        return empty_figure(title, "no model has finished training yet")
    fig = go.Figure()
    pts = pts.sort_values(["spent", "version"]) if not pts.empty else pts
    if not pts.empty:
        fig.add_scatter(
            x=pts["spent"],
            y=pts[metric],
            mode="lines",
            line={"color": "#98a2b3"},
            name="project",
            hoverinfo="skip",
        )
    for strategy, part in pts.groupby("strategy", sort=False):
        fig.add_scatter(
            x=part["spent"],
            y=part[metric],
            mode="markers",
            marker={"size": 11},
            name=f"project · {strategy}",
            text=[f"v{v}" for v in part["version"]],
            hovertemplate="%{text}: %{y:.3f} after %{x} annotations<extra>"
            + str(strategy)
            + "</extra>",
        )
    if metric == "hier_f1":
        for sim in simulations:
            fig.add_scatter(
                x=sim["spent"],
                y=sim["mean"],
                error_y={"type": "data", "array": sim["std"], "visible": True},
                mode="lines",
                line={"dash": "dot"},
                name=f"simulation {sim['experiment']} · {sim['strategy']}",
            )
    _style(
        fig,
        title=title,
        xaxis_title="annotations spent",
        yaxis={"title": metric, "range": [0, 1.02]},
    )
    return fig
