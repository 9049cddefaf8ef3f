"""Model pages: versions of a project's model with their metrics and a per-depth F1 figure."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from active_learning.models import JobStatus
from active_learning.selectors import (
    latest_feature_set,
    model_versions_for_page,
    per_node_rows,
)
from annotation.models import Membership
from annotation.views import project_role


def per_depth_f1_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Long frame (version, depth, f1) from model metrics' ``per_depth_macro_f1``."""
    out = []
    for row in rows:
        per_depth = (row.get("metrics") or {}).get("per_depth_macro_f1") or {}
        items = per_depth.items() if isinstance(per_depth, dict) else enumerate(per_depth)
        for depth, f1 in items:
            if f1 is not None:
                out.append({"version": row["number"], "depth": int(depth), "f1": float(f1)})
    return pd.DataFrame(out, columns=["version", "depth", "f1"])


def per_depth_f1_figure(df: pd.DataFrame) -> go.Figure:
    """One line per taxonomy depth: macro F1 (out-of-sample) across model versions."""
    fig = go.Figure()
    for depth, part in df.sort_values("version").groupby("depth"):
        fig.add_trace(
            go.Scatter(x=part["version"], y=part["f1"], mode="lines+markers", name=f"depth {depth}")
        )
    fig.update_layout(
        xaxis_title="model version",
        yaxis_title="macro F1 (out-of-sample)",
        yaxis_range=[0, 1],
        height=320,
        margin={"l": 50, "r": 20, "t": 20, "b": 40},
        legend={"orientation": "h"},
    )
    fig.update_xaxes(dtick=1)
    return fig


@project_role(Membership.Role.REVIEWER)
def project_models(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    versions = model_versions_for_page(project=project)
    done = [
        {"number": v.number, "metrics": v.metrics} for v in versions if v.status == JobStatus.DONE
    ]
    df = per_depth_f1_frame(done)
    figure = (
        per_depth_f1_figure(df).to_html(full_html=False, include_plotlyjs=False)
        if not df.empty
        else ""
    )
    newest = next((v for v in versions if v.status == JobStatus.DONE), None)
    return render(
        request,
        "active_learning/project_models.html",
        {
            "project": project,
            "membership": membership,
            "versions": versions,
            "feature_set": latest_feature_set(project=project),
            "figure": figure,
            "newest": newest,
            "node_rows": per_node_rows(model_version=newest) if newest else [],
        },
    )
