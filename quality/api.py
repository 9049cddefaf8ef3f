"""REST endpoints for label quality: a project's label issues and its relabel cycles.

Reviewers and admins of the project read them (annotators stay blind to other people's labels and
the model's guesses); admins start a cycle. Mounted on the one API in ``refrain/api.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, QueryDict
from ninja import Field, P, PathEx, Query, QueryEx, Router, Schema, Status

from annotation import permissions as perm
from annotation.models import Membership, TaxonomyNode
from quality import selectors as sel
from quality.explorer.filters import PARAMS, explorer_query_parse
from quality.explorer.selectors import explorer_page
from quality.export import ExportFormat, labels_download
from quality.models import LabelIssue, QualityCycle
from quality.services.cycle import cycle_enqueue
from refrain.errors import NotFound

router = Router(tags=["quality"])
Role = Membership.Role
MAX_PAGE = 500
PathId = PathEx[int, P(ge=1, le=2**63 - 1)]


class ErrorOut(Schema):
    detail: str
    code: str = "error"


class IssueOut(Schema):
    id: int
    run_id: int
    clip_id: int
    clip_name: str
    rank: int
    score: float
    issue_type: str
    node: str | None = Field(None, description="path of the suspect node")
    depth: int | None
    suggested: list[str] = Field(description="paths of the suggested label set")
    status: str
    relabel_task_id: int | None
    created_at: datetime
    closed_at: datetime | None


class IssueFilters(Schema):
    type: LabelIssue.Type | None = None
    status: LabelIssue.Status | None = None
    node: str | None = Field(None, description="path or key of the suspect node")
    depth: int | None = Field(None, ge=0, le=1000)
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10**9)


class ExportParams(Schema):
    format: ExportFormat = Field("csv", description="csv (a manifest import_clips reads) or jsonl")
    labelled_only: bool = Field(False, description="leave out clips nobody has labelled yet")


class ExplorerParams(Schema):
    """The clip explorer's URL parameters (``quality.explorer.filters``), same meaning."""

    node: str | None = Field(None, description="taxonomy node key or path, with descendants")
    status: str | None = Field(None, description="ready, failed, labelled or unlabelled")
    issue_type: str | None = Field(None, description="newest issue's type, or none")
    issue_status: str | None = Field(None, description="newest issue's status, or none")
    annotator: str | None = Field(None, description="username of a member who annotated")
    quality: str | None = Field(None, description="consensus quality range lo-hi, e.g. 0.2-0.6")
    disagreement: str | None = Field(None, description="1: annotators disagree; 0: the rest")
    q: str | None = Field(None, description="text in the name, external id or metadata")
    sort: str | None = Field(None, description="a column, - first to descend: -quality")
    page: str | None = Field(None, description="1-based page number")


class ExplorerRowOut(Schema):
    clip_id: int
    name: str
    duration_s: float | None
    clip_status: str
    label: list[str] = Field(description="most specific paths of the label that stands")
    annotators: list[str]
    n_annotations: int
    agreement: float | None
    quality: float | None
    issue_id: int | None
    issue_type: str
    issue_status: str
    prediction: str = Field(description="the newest model's most probable path (deepest node)")
    prediction_prob: float | None
    model_number: int | None


class ExplorerOut(Schema):
    count: int
    count_capped: bool = Field(description="True: more clips match than count says")
    page: int
    n_pages: int
    page_size: int
    rows: list[ExplorerRowOut]


class CycleOut(Schema):
    id: int
    project_id: int
    trigger: str
    status: str
    steps: list[str] = Field(description="the cycle's steps, in order")
    steps_done: list[str]
    attempts: int
    model_version_id: int | None
    results: dict[str, Any]
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CycleStartOut(CycleOut):
    created: bool = Field(description="false when an unfinished cycle was resumed instead")


class JobOut(Schema):
    kind: str = Field(description="import, features, training, cycle or run")
    id: int
    name: str
    status: str
    progress: str
    worker: str = Field(
        description="Celery node name (or process:<host>) running or last running it"
    )
    worker_pid: int | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    stale: bool = Field(description="running with a heartbeat older than REFRAIN_JOB_STALE_SECONDS")
    attempts: int
    notes: list[dict[str, Any]] = Field(description="what the orphan sweep did to it, oldest first")
    error: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    done: int | None = Field(
        description="items done or failed (a feature set's clips, a cycle's steps)"
    )
    total: int | None = Field(
        description="items in all; null where the job does not count its work"
    )
    log_tail: str = Field(
        description="the last lines its workers logged while running it, newest last"
    )


class JobsOut(Schema):
    stale_seconds: int
    imports: list[JobOut]
    feature_sets: list[JobOut]
    trainings: list[JobOut]
    cycles: list[JobOut]
    runs: list[JobOut]


def _user(request: HttpRequest) -> Any:
    return request.auth  # type: ignore[attr-defined]


def _cycle_out(cycle: QualityCycle) -> dict[str, Any]:
    return {
        "id": cycle.pk,
        "project_id": cycle.project_id,
        "trigger": cycle.trigger,
        "status": cycle.status,
        "steps": list(QualityCycle.STEPS),
        "steps_done": list(cycle.steps_done),
        "attempts": cycle.attempts,
        "model_version_id": cycle.model_version_id,
        "results": cycle.results,
        "error": cycle.error,
        "created_at": cycle.created_at,
        "started_at": cycle.started_at,
        "finished_at": cycle.finished_at,
    }


@router.get(
    "/projects/{project_id}/issues",
    response={200: list[IssueOut], 422: ErrorOut},
    summary="List label issues",
)
def list_issues(request: HttpRequest, project_id: PathId, filters: Query[IssueFilters]) -> Any:
    """The project's label issues, newest run first then by rank (1 = most suspect)."""
    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    node_id = None
    if filters.node:
        node = (
            TaxonomyNode.objects.filter(
                version_id=project.taxonomy_version_id, path=filters.node
            ).first()
            or TaxonomyNode.objects.filter(
                version_id=project.taxonomy_version_id, key=filters.node
            ).first()
        )
        if node is None:
            return Status(
                422,
                {
                    "detail": f"no node {filters.node!r} in the project's taxonomy "
                    f"(version {project.taxonomy_version_id})",
                    "code": "unknown_node",
                },
            )
        node_id = node.pk
    qs = sel.issue_list(
        project=project,
        issue_type=filters.type,
        status=filters.status,
        node_id=node_id,
        depth=filters.depth,
    )
    issues = list(qs[filters.offset : filters.offset + filters.limit])
    wanted = {i for issue in issues for i in issue.suggested_node_ids}
    paths = dict(TaxonomyNode.objects.filter(pk__in=wanted).values_list("pk", "path"))
    return [
        {
            "id": issue.pk,
            "run_id": issue.run_id,
            "clip_id": issue.clip_id,
            "clip_name": str(issue.clip),
            "rank": issue.rank,
            "score": issue.score,
            "issue_type": issue.issue_type,
            "node": issue.node.path if issue.node else None,
            "depth": issue.depth,
            "suggested": [paths[i] for i in issue.suggested_node_ids if i in paths],
            "status": issue.status,
            "relabel_task_id": issue.relabel_task_id,
            "created_at": issue.created_at,
            "closed_at": issue.closed_at,
        }
        for issue in issues
    ]


@router.get(
    "/projects/{project_id}/clips/explore",
    response={200: ExplorerOut, 404: ErrorOut, 422: ErrorOut},
    summary="Explore clips (the clip explorer's table)",
)
def explore_clips(request: HttpRequest, project_id: PathId, params: Query[ExplorerParams]) -> Any:
    """One page of the clip explorer: filters, sort and page as on ``/p/<slug>/explore/``."""
    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    given = QueryDict(mutable=True)
    for name in PARAMS:
        value = getattr(params, name)
        if value is not None:
            given[name] = value
    page = explorer_page(project=project, query=explorer_query_parse(given))
    return {
        "count": page.count,
        "count_capped": page.capped,
        "page": page.page,
        "n_pages": page.n_pages,
        "page_size": page.page_size,
        "rows": [
            {
                **r,
                "label": r["label"].split("|") if r["label"] else [],
                "annotators": r["annotators"].split(", ") if r["annotators"] else [],
            }
            for r in page.rows
        ],
    }


@router.get(
    "/projects/{project_id}/export",
    response={200: None},
    summary="Export the project's labels",
    openapi_extra={
        "responses": {
            200: {
                "description": "One row per clip: the label that stands, its source, consensus "
                "quality and agreement, the newest label issue, the clip's status",
                "content": {"text/csv": {}, "application/x-ndjson": {}},
            }
        }
    },
)
def export_labels(request: HttpRequest, project_id: PathId, params: Query[ExportParams]) -> Any:
    """The project's labels as CSV or JSON Lines (reviewers and admins). The CSV is a manifest:
    ``import_clips --manifest`` reads its ``path`` and ``labels`` columns."""
    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    return labels_download(project, params.format, labelled_only=params.labelled_only)


@router.get("/projects/{project_id}/cycles", response=list[CycleOut], summary="List relabel cycles")
def list_cycles(
    request: HttpRequest, project_id: PathId, limit: QueryEx[int, P(ge=1, le=MAX_PAGE)] = 20
) -> list[dict[str, Any]]:
    """The project's relabel cycles, newest first."""
    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    return [_cycle_out(c) for c in sel.recent_cycles(project=project, limit=limit)]


@router.post(
    "/projects/{project_id}/cycles",
    response={202: CycleStartOut},
    summary="Start a relabel cycle",
)
def start_cycle(request: HttpRequest, project_id: PathId) -> Any:
    """Retrain -> detect -> route -> acquire on the workers. 202: poll ``GET /cycles/{id}``.

    An unfinished cycle is resumed rather than duplicated (``created`` is then false).
    """
    project = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN).project
    cycle, created = cycle_enqueue(project=project)
    return Status(202, {**_cycle_out(cycle), "created": created})


@router.get("/cycles/{cycle_id}", response=CycleOut, summary="Get a relabel cycle")
def get_cycle(request: HttpRequest, cycle_id: PathId) -> dict[str, Any]:
    cycle = QualityCycle.objects.filter(pk=cycle_id).first()
    try:
        if cycle is None:
            raise NotFound("")
        perm.require_role(project_id=cycle.project_id, user=_user(request), role=Role.REVIEWER)
    except NotFound:
        raise NotFound(f"cycle {cycle_id} not found among your projects") from None
    return _cycle_out(cycle)


@router.get("/projects/{project_id}/jobs", response=JobsOut, summary="List background jobs")
def list_jobs(request: HttpRequest, project_id: int, limit: Query[int] = 20) -> dict[str, Any]:
    """The project's recent imports, feature sets, trainings, relabel cycles and detection runs
    (newest first, ``limit`` of each): status, progress, worker, heartbeat, attempts, what the
    orphan sweep did, errors. Reviewers and admins."""
    from dataclasses import asdict

    from django.conf import settings

    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    overview = sel.jobs_overview(project=project, limit=max(1, min(int(limit), MAX_PAGE)))
    return {
        "stale_seconds": settings.REFRAIN_JOB_STALE_SECONDS,
        **{key: [asdict(j) for j in rows] for key, rows in overview.items()},
    }
