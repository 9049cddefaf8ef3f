"""Plotly figures for the quality dashboard: DataFrames in, figures out (no queries here)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from quality.dashboards.figures import BASE_LAYOUT

# The console's style (the empty template styled by hand): "plotly_white" cost ~20 ms a figure.
_LAYOUT = {
    **{k: v for k, v in BASE_LAYOUT.items() if k not in ("legend", "xaxis", "yaxis")},
    "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
    "height": 320,
}


def _empty(title: str, hint: str = "no data yet") -> go.Figure:
    fig = go.Figure()
    layout = {**_LAYOUT, "height": 160}
    fig.update_layout(
        title=title,
        annotations=[{"text": hint, "showarrow": False, "font": {"color": "#6b7280"}}],
        xaxis={"visible": False},
        yaxis={"visible": False},
        **layout,
    )
    return fig


def issues_by_type_depth_figure(df: pd.DataFrame) -> go.Figure:
    """Stacked bars: issues per type, split by the suspect node's depth. Columns: issue_type, depth, n."""
    title = "Label issues by type and depth"
    if df.empty:
        return _empty(title)
    fig = go.Figure()
    for depth, part in df.fillna({"depth": -1}).groupby("depth"):
        name = "no node" if depth == -1 else f"depth {int(depth)}"
        fig.add_bar(x=part["issue_type"], y=part["n"], name=name)
    fig.update_layout(title=title, barmode="stack", **_LAYOUT)
    return fig


def score_distribution_figure(df: pd.DataFrame) -> go.Figure:
    """Histogram of the latest run's label quality scores, by issue status. Columns: score, status."""
    title = "Label quality scores of the latest run's issues (lower = more suspect)"
    if df.empty:
        return _empty(title)
    fig = go.Figure()
    for status, part in df.groupby("status"):
        fig.add_histogram(x=part["score"], name=str(status), nbinsx=30)
    fig.update_layout(title=title, barmode="stack", xaxis_title="score", **_LAYOUT)
    return fig


def consensus_quality_figure(df: pd.DataFrame) -> go.Figure:
    """Histogram of per-clip consensus quality, by number of annotations, from binned counts.

    Columns: quality (the bin's centre), n (annotations per clip), count (clips).
    """
    title = "Consensus quality per clip"
    if df.empty:
        return _empty(title)
    width = 1.0 / 30
    fig = go.Figure()
    for n, part in df.groupby("n"):
        fig.add_bar(x=part["quality"], y=part["count"], width=width, name=f"{int(n)} annotation(s)")
    fig.update_layout(
        title=title,
        barmode="stack",
        bargap=0,
        xaxis={"title": "quality", "range": [0, 1], "dtick": 0.1},
        **_LAYOUT,
    )
    return fig


def annotator_quality_figure(df: pd.DataFrame) -> go.Figure:
    """Bars: CROWDLAB quality per annotator. Columns: annotator, quality, n."""
    title = "Annotator quality"
    if df.empty:
        return _empty(title, "appears once annotators with accounts have labelled clips")
    df = df.sort_values("quality")
    fig = go.Figure(
        go.Bar(
            x=df["quality"],
            y=df["annotator"],
            orientation="h",
            text=df["n"].map(lambda n: f"{int(n)} labels"),
        )
    )
    fig.update_layout(title=title, xaxis_title="quality", yaxis={"automargin": True}, **_LAYOUT)
    return fig


def cycle_history_figure(df: pd.DataFrame) -> go.Figure:
    """Issues found, routed and tasks acquired per cycle.

    Columns: cycle, started, issues, routed, acquired.
    """
    title = "Relabel cycles"
    if df.empty:
        return _empty(title, "no cycle has run yet")
    labels = [
        f"#{c} · {pd.Timestamp(t):%b %d %H:%M}"
        for c, t in zip(df["cycle"], df["started"], strict=True)
    ]
    fig = go.Figure()
    for col in ("issues", "routed", "acquired"):
        fig.add_bar(x=labels, y=df[col], name=col)
    fig.update_layout(title=title, barmode="group", xaxis={"type": "category"}, **_LAYOUT)
    return fig
