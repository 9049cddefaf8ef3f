"""REST endpoints for projects, taxonomies, clips, tasks, annotations and reviews.

Each endpoint parses, checks the caller's role (``annotation.permissions``), calls one service or
selector, and shapes the answer. Errors are typed in the services and mapped to statuses in
``refrain/api.py``; no endpoint answers 500 for bad input.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Field, File, Form, FormEx, P, PathEx, Query, QueryEx, Router, Schema, Status
from ninja.files import UploadedFile
from ninja.security import django_auth

from annotation import permissions as perm
from annotation.auth import ApiTokenAuth
from annotation.models import (
    Annotation,
    AnnotationLabel,
    ApiToken,
    Assignment,
    Clip,
    Membership,
    Project,
    ReviewDecision,
    Task,
    TaxonomyImportJob,
    TaxonomyVersion,
)
from annotation.services import members as members_service
from annotation.services import projects as projects_service
from annotation.services import review as review_service
from annotation.services import tasks as queue
from annotation.services.audio_source import clip_audio_available
from annotation.services.clips import clip_ids_of_upload, clip_upload
from annotation.services.enqueue import Manual, task_enqueue
from annotation.services.taxonomies import taxonomy_import_job_progress, taxonomy_import_submit
from annotation.services.tokens import api_token_create, api_token_revoke, api_tokens_of
from annotation.services.visuals import clip_visuals_request, clip_visuals_stored
from refrain.errors import NotFound, PermissionDenied

logger = logging.getLogger(__name__)
router = Router(tags=["annotation"])
Role = Membership.Role

# Bounds on every number the API reads, so out-of-range input is a 422 from the schema rather than
# a database error (ids are PostgreSQL bigints; offsets and priorities are bounded well inside).
MAX_ID = 2**63 - 1
MAX_OFFSET = 10**9
MAX_PRIORITY = 1e9
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = PathEx[int, P(ge=1, le=MAX_ID)]
Offset = QueryEx[int, P(ge=0, le=MAX_OFFSET)]
Priority = Annotated[float, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY, allow_inf_nan=False)]


def _user(request: HttpRequest) -> Any:
    return request.auth  # type: ignore[attr-defined]


# --- schemas --------------------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str
    code: str = "error"


class ProjectOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    taxonomy_version_id: int
    overlap: int
    blind: bool
    lease_seconds: int
    role: str | None = None


class ProjectIn(Schema):
    name: str = Field(..., min_length=1, max_length=200)
    taxonomy_version_id: Id
    description: str = ""
    overlap: int = Field(1, ge=1, le=projects_service.MAX_OVERLAP)
    blind: bool = True
    lease_seconds: int = Field(15 * 60, ge=60, le=24 * 3600)


class ProjectPatch(Schema):
    overlap: int | None = Field(None, ge=1, le=projects_service.MAX_OVERLAP)
    blind: bool | None = None
    lease_seconds: int | None = Field(None, ge=60, le=24 * 3600)
    taxonomy_version_id: Id | None = None


class MemberOut(Schema):
    user_id: int
    username: str
    role: str


class MemberIn(Schema):
    user: str = Field(..., description="username or email of an existing account")
    role: str = Role.ANNOTATOR


class TaxonomyVersionOut(Schema):
    id: int
    taxonomy: str
    number: int
    n_nodes: int
    max_depth: int
    is_dag: bool


class NodeOut(Schema):
    id: int
    key: str
    name: str
    path: str
    depth: int
    index: int
    parent_id: int | None
    is_leaf: bool


class ClipOut(Schema):
    id: int
    name: str
    duration_s: float | None
    segment_start_s: float | None
    segment_end_s: float | None
    audio_url: str
    spectrogram_url: str
    status: str


class OtherLabelsOut(Schema):
    labels: list[str]
    unsure: bool


class TaskOut(Schema):
    task_id: int
    project_id: int
    kind: str
    reason: str
    priority: float
    lease_expires_at: datetime
    taxonomy_version: TaxonomyVersionOut
    clip: ClipOut
    submit_url: str
    others: list[OtherLabelsOut] | None = Field(
        None, description="Earlier label sets of this clip; always null in blind projects."
    )


class AnnotationIn(Schema):
    labels: list[str] = Field(..., description="Node keys or full paths; ancestors are implied.")
    unsure: bool = False
    note: str = ""
    idempotency_key: str | None = Field(None, max_length=100)
    time_spent_ms: int | None = Field(None, ge=0, le=24 * 3600 * 1000)
    taxonomy_version: Id | None = Field(
        None, description="The version the labels were picked on; refused if no longer current."
    )


class AnnotationOut(Schema):
    id: int
    clip_id: int
    task_id: int | None
    taxonomy_version_id: int
    kind: str
    user: str | None
    labels: list[str]
    implied: list[str]
    unsure: bool
    note: str
    time_spent_ms: int | None
    supersedes_id: int | None
    created_at: datetime


class LeaseOut(Schema):
    task_id: int
    lease_expires_at: datetime


class TaskRowOut(Schema):
    id: int
    clip_id: int
    kind: str
    status: str
    priority: float
    reason: str
    overlap: int
    n_submitted: int


class TasksIn(Schema):
    clip_ids: list[Id] = Field(..., max_length=100_000)
    kind: str = Task.Kind.LABEL
    priority: Priority = 0.0
    reason: str = Field("api", max_length=120)
    overlap: int | None = Field(None, ge=1, le=projects_service.MAX_OVERLAP)


class CreatedOut(Schema):
    created: int


class ReviewIn(Schema):
    decision: str
    annotation_id: Id | None = None
    labels: list[str] = Field(default_factory=list)
    note: str = ""


class ReviewOut(Schema):
    id: int
    clip_id: int
    decision: str
    reviewer: str
    annotation_id: int | None
    correction_id: int | None
    relabel_task_id: int | None
    note: str
    created_at: datetime


class VisualOut(Schema):
    duration_s: float
    peaks: list[float]
    spectrogram_url: str


class TokenIn(Schema):
    name: str = Field("", max_length=100)
    scopes: list[str] = Field(default_factory=lambda: ["api"])
    expires_in_days: int | None = Field(
        None, ge=1, le=36500, description="None: REFRAIN_TOKEN_DEFAULT_DAYS"
    )


class TokenRowOut(Schema):
    id: int
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str


class TokenOut(TokenRowOut):
    token: str = Field(..., description="The token itself; shown this once, store it safely.")


# --- shaping --------------------------------------------------------------------------------------


def _project_out(project: Project, role: str | None) -> dict[str, Any]:
    return {
        "id": project.pk,
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "taxonomy_version_id": project.taxonomy_version_id,
        "overlap": project.overlap,
        "blind": project.blind,
        "lease_seconds": project.lease_seconds,
        "role": role,
    }


def _version_out(version: TaxonomyVersion, taxonomy_name: str | None = None) -> dict[str, Any]:
    return {
        "id": version.pk,
        "taxonomy": taxonomy_name or version.taxonomy.name,
        "number": version.number,
        "n_nodes": version.n_nodes,
        "max_depth": version.max_depth,
        "is_dag": version.is_dag,
    }


def clip_out(clip: Clip, *, blind: bool) -> dict[str, Any]:
    # In blind projects the file name is hidden too: folder imports often name the genre.
    return {
        "id": clip.pk,
        "name": f"Clip {clip.pk}" if blind else str(clip),
        "duration_s": clip.duration_s,
        "segment_start_s": clip.segment_start_s,
        "segment_end_s": clip.segment_end_s,
        "audio_url": reverse("clip-audio", args=[clip.pk]),
        "spectrogram_url": reverse("clip-spectrogram", args=[clip.pk]),
        "status": clip.status,
    }


def task_out(assignment: Assignment) -> dict[str, Any]:
    task = assignment.task
    project = task.project
    version = project.taxonomy_version
    others = None
    if not project.blind:
        by_ann: dict[int, list[str]] = {}
        unsure: dict[int, bool] = {}
        for ann_id, path, is_unsure in AnnotationLabel.objects.filter(
            annotation__clip_id=task.clip_id, explicit=True
        ).values_list("annotation_id", "node__path", "annotation__unsure"):
            by_ann.setdefault(ann_id, []).append(path)
            unsure[ann_id] = is_unsure
        others = [{"labels": labs, "unsure": unsure[a]} for a, labs in by_ann.items()]
    return {
        "task_id": task.pk,
        "project_id": project.pk,
        "kind": task.kind,
        # Blind: why a clip came back (e.g. "label_issue:wrong_branch") would hint at the answer.
        "reason": "second_opinion"
        if project.blind and task.kind == Task.Kind.RELABEL
        else task.reason,
        "priority": task.priority,
        "lease_expires_at": assignment.lease_expires_at,
        "taxonomy_version": _version_out(version, taxonomy_name=None),
        "clip": clip_out(task.clip, blind=project.blind),
        "submit_url": f"/api/v1/tasks/{task.pk}/annotations",
        "others": others,
    }


def annotation_out(
    annotation: Annotation,
    *,
    show_user: bool = True,
    label_keys: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """``label_keys`` (explicit, implied), when the caller knows them, saves reading the labels."""
    if label_keys is not None:
        explicit, implied = label_keys
    else:
        explicit, implied = [], []
        for key, is_explicit in (
            AnnotationLabel.objects.filter(annotation=annotation)
            .order_by("node__index")
            .values_list("node__key", "explicit")
        ):
            (explicit if is_explicit else implied).append(key)
    return {
        "id": annotation.pk,
        "clip_id": annotation.clip_id,
        "task_id": annotation.task_id,
        "taxonomy_version_id": annotation.taxonomy_version_id,
        "kind": annotation.kind,
        "user": annotation.source if show_user else None,
        "labels": explicit,
        "implied": implied,
        "unsure": annotation.unsure,
        "note": annotation.note,
        "time_spent_ms": annotation.time_spent_ms,
        "supersedes_id": annotation.supersedes_id,
        "created_at": annotation.created_at,
    }


def _review_out(row: ReviewDecision) -> dict[str, Any]:
    return {
        "id": row.pk,
        "clip_id": row.clip_id,
        "decision": row.decision,
        "reviewer": row.reviewer.get_username(),
        "annotation_id": row.annotation_id,
        "correction_id": row.correction_id,
        "relabel_task_id": row.relabel_task_id,
        "note": row.note,
        "created_at": row.created_at,
    }


# --- projects -------------------------------------------------------------------------------------


@router.get("/projects", response=list[ProjectOut])
def projects_list(request: HttpRequest) -> list[dict[str, Any]]:
    memberships = Membership.objects.filter(user=_user(request)).select_related("project")
    return [_project_out(m.project, m.role) for m in memberships.order_by("project__name")]


@router.post("/projects", response={201: ProjectOut, 403: ErrorOut, 422: ErrorOut})
def projects_create(request: HttpRequest, payload: ProjectIn) -> Status:
    perm.require_staff(_user(request))
    version = get_object_or_404(TaxonomyVersion, pk=payload.taxonomy_version_id)
    project = projects_service.project_create(
        name=payload.name,
        taxonomy_version=version,
        user=_user(request),
        description=payload.description,
        overlap=payload.overlap,
        blind=payload.blind,
        lease_seconds=payload.lease_seconds,
    )
    return Status(201, _project_out(project, Role.ADMIN))


@router.get("/projects/{project_id}", response=ProjectOut)
def projects_detail(request: HttpRequest, project_id: PathId) -> dict[str, Any]:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ANNOTATOR)
    return _project_out(m.project, m.role)


@router.patch("/projects/{project_id}", response=ProjectOut)
def projects_update(
    request: HttpRequest, project_id: PathId, payload: ProjectPatch
) -> dict[str, Any]:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN)
    version = (
        get_object_or_404(TaxonomyVersion, pk=payload.taxonomy_version_id)
        if payload.taxonomy_version_id is not None
        else None
    )
    project = projects_service.project_update_policy(
        project=m.project,
        overlap=payload.overlap,
        blind=payload.blind,
        lease_seconds=payload.lease_seconds,
        taxonomy_version=version,
    )
    return _project_out(project, m.role)


@router.get("/projects/{project_id}/members", response=list[MemberOut])
def members_list(request: HttpRequest, project_id: PathId) -> list[dict[str, Any]]:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN)
    rows = m.project.memberships.select_related("user").order_by("user__username")
    return [{"user_id": r.user_id, "username": r.user.get_username(), "role": r.role} for r in rows]


@router.post("/projects/{project_id}/members", response={201: MemberOut})
def members_invite(request: HttpRequest, project_id: PathId, payload: MemberIn) -> Status:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN)
    row = members_service.member_invite(
        project=m.project, username_or_email=payload.user, role=payload.role
    )
    return Status(
        201, {"user_id": row.user_id, "username": row.user.get_username(), "role": row.role}
    )


# --- taxonomies -----------------------------------------------------------------------------------


def _visible_version(request: HttpRequest, version_id: int) -> TaxonomyVersion:
    user = _user(request)
    version = TaxonomyVersion.objects.select_related("taxonomy").filter(pk=version_id).first()
    visible = version is not None and (
        perm.can_create_projects(user)
        or Membership.objects.filter(user=user, project__taxonomy_version=version).exists()
    )
    if not visible:
        raise NotFound(f"taxonomy version {version_id} not found")
    return version  # type: ignore[return-value]


@router.get("/taxonomies", response=list[TaxonomyVersionOut])
def taxonomies_list(request: HttpRequest) -> list[dict[str, Any]]:
    """Staff see every version; others the versions their projects use."""
    user = _user(request)
    versions = TaxonomyVersion.objects.select_related("taxonomy").order_by(
        "taxonomy__name", "-number"
    )
    if not perm.can_create_projects(user):
        versions = versions.filter(projects__memberships__user=user).distinct()
    return [_version_out(v) for v in versions]


@router.get("/taxonomies/versions/{version_id}", response=TaxonomyVersionOut)
def taxonomy_version_detail(request: HttpRequest, version_id: PathId) -> dict[str, Any]:
    return _version_out(_visible_version(request, version_id))


@router.get("/taxonomies/versions/{version_id}/nodes", response=list[NodeOut])
def taxonomy_nodes(request: HttpRequest, version_id: PathId) -> list[dict[str, Any]]:
    """Every node of a version, in index order: what the label picker loads."""
    version = _visible_version(request, version_id)
    return list(
        version.nodes.order_by("index").values(
            "id", "key", "name", "path", "depth", "index", "parent_id", "is_leaf"
        )
    )


# --- clips ----------------------------------------------------------------------------------------


@router.get("/projects/{project_id}/clips", response=list[ClipOut])
def clips_list(
    request: HttpRequest,
    project_id: PathId,
    offset: Offset = 0,
    limit: QueryEx[int, P(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.REVIEWER)
    clips = Clip.objects.filter(project=m.project).order_by("pk")[offset : offset + limit]
    return [clip_out(c, blind=False) for c in clips]


@router.post("/projects/{project_id}/clips", response={201: ClipOut, 422: ErrorOut})
def clips_upload(
    request: HttpRequest,
    project_id: PathId,
    file: File[UploadedFile],
    priority: FormEx[float, P(ge=-MAX_PRIORITY, le=MAX_PRIORITY, allow_inf_nan=False)] = 0.0,
) -> Status:
    """Upload one audio file; it becomes a clip with a label task in the queue."""
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN)
    job, clip = clip_upload(project=m.project, upload=file, user=_user(request))
    if clip is None or clip.status != Clip.Status.READY:
        reason = (
            "; ".join(p["reason"] for p in job.problems) or "the file is already in the project"
        )
        return Status(422, {"detail": f"{file.name}: {reason}", "code": "clip_rejected"})
    task_enqueue(
        project=m.project, sources=Manual.for_clips(clip_ids_of_upload(clip), priority=priority)
    )
    return Status(201, clip_out(clip, blind=False))


@router.get("/clips/{clip_id}", response=ClipOut)
def clips_detail(request: HttpRequest, clip_id: PathId) -> dict[str, Any]:
    clip, m = perm.clip_for_user(clip_id=clip_id, user=_user(request))
    return clip_out(clip, blind=m.project.blind and not perm.role_at_least(m, Role.REVIEWER))


@router.get("/clips/{clip_id}/visual", response={200: VisualOut, 202: ErrorOut, 404: ErrorOut})
def clips_visual(request: HttpRequest, clip_id: PathId) -> Status:
    """Waveform peaks (max |amplitude| per bin, 0..1) and the spectrogram image's URL, as a
    ``cpu`` worker made them at import; 202 while they are being made (ask again shortly)."""
    clip, _ = perm.clip_for_user(clip_id=clip_id, user=_user(request))
    data = clip_visuals_stored(clip)
    if data is None:
        if not clip_audio_available(clip):
            raise NotFound(f"cannot read the audio of clip {clip_id}")
        clip_visuals_request(clip)
        return Status(
            202, {"detail": "the waveform is being made; ask again", "code": "visual_pending"}
        )
    return Status(200, {**data, "spectrogram_url": reverse("clip-spectrogram", args=[clip.pk])})


# --- the queue ------------------------------------------------------------------------------------


@router.post(
    "/projects/{project_id}/tasks/next",
    response={200: TaskOut, 204: None, 404: ErrorOut},
    summary="Take the next task",
)
def tasks_next(
    request: HttpRequest,
    project_id: PathId,
    exclude: list[Id] = Query(
        [], description="Task ids not to return (the one on screen).", max_length=1000
    ),
) -> Status:
    """The task to work on next (one already held comes back first), or 204 when none is left.

    The task is held under a lease (``lease_expires_at``); renew it with ``POST
    /tasks/{id}/lease`` while working, or it returns to the queue.
    """
    assignment = queue.task_next_for_annotator(
        project_id=project_id,
        user=_user(request),
        exclude_task_ids=exclude,
    )
    if assignment is None:
        return Status(204, None)
    return Status(200, task_out(assignment))


@router.post("/tasks/{task_id}/lease", response={200: LeaseOut, 409: ErrorOut})
def tasks_renew(request: HttpRequest, task_id: PathId) -> dict[str, Any]:
    a = queue.assignment_renew(task_id=task_id, user=_user(request))
    return {"task_id": a.task_id, "lease_expires_at": a.lease_expires_at}


@router.post("/tasks/{task_id}/skip", response={204: None, 409: ErrorOut})
def tasks_skip(request: HttpRequest, task_id: PathId) -> Status:
    queue.assignment_skip(task_id=task_id, user=_user(request))
    return Status(204, None)


@router.post(
    "/tasks/{task_id}/annotations",
    response={200: AnnotationOut, 201: AnnotationOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    summary="Submit labels for a held task",
)
def tasks_submit(request: HttpRequest, task_id: PathId, payload: AnnotationIn) -> Status:
    """201 with the new annotation; 200 with the stored one when ``idempotency_key`` repeats."""
    result = queue.annotation_submit(
        task_id=task_id,
        user=_user(request),
        labels=payload.labels,
        unsure=payload.unsure,
        note=payload.note,
        idempotency_key=payload.idempotency_key,
        time_spent_ms=payload.time_spent_ms,
        taxonomy_version_id=payload.taxonomy_version,
    )
    return Status(
        (201 if result.created else 200),
        annotation_out(result.annotation, label_keys=result.label_keys),
    )


@router.get("/projects/{project_id}/tasks", response=list[TaskRowOut])
def tasks_list(
    request: HttpRequest,
    project_id: PathId,
    status: Task.Status = Task.Status.OPEN,
    offset: Offset = 0,
    limit: QueryEx[int, P(ge=1, le=1000)] = 100,
) -> list[Any]:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.REVIEWER)
    return list(
        Task.objects.filter(project=m.project, status=status)
        .order_by("-priority", "pk")
        .values("id", "clip_id", "kind", "status", "priority", "reason", "overlap", "n_submitted")[
            offset : offset + limit
        ]
    )


@router.post("/projects/{project_id}/tasks", response={201: CreatedOut, 422: ErrorOut})
def tasks_create(request: HttpRequest, project_id: PathId, payload: TasksIn) -> Status:
    m = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN)
    if payload.kind not in Task.Kind.values:
        return Status(
            422, {"detail": f"unknown task kind {payload.kind!r}", "code": "invalid_kind"}
        )
    clip_ids = set(payload.clip_ids)
    known = set(
        Clip.objects.filter(
            project=m.project, pk__in=clip_ids, status=Clip.Status.READY
        ).values_list("pk", flat=True)
    )
    if clip_ids - known:
        missing = sorted(clip_ids - known)[:5]
        detail = f"not ready clips of this project: {missing}"
        return Status(422, {"detail": detail, "code": "unknown_clips"})
    sources = Manual.for_clips(
        sorted(clip_ids),
        kind=payload.kind,
        priority=payload.priority,
        reason=payload.reason,
        overlap=payload.overlap,
    )
    done = task_enqueue(project=m.project, sources=sources)
    return Status(201, {"created": len(done.created)})


# --- annotations and reviews ----------------------------------------------------------------------


@router.get("/projects/{project_id}/annotations", response=list[AnnotationOut])
def annotations_list(
    request: HttpRequest,
    project_id: PathId,
    offset: Offset = 0,
    limit: QueryEx[int, P(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Reviewers and admins see every annotation of the project; annotators only their own."""
    user = _user(request)
    m = perm.require_role(project_id=project_id, user=user, role=Role.ANNOTATOR)
    qs = Annotation.objects.filter(clip__project=m.project).order_by("-created_at", "-pk")
    if not perm.role_at_least(m, Role.REVIEWER):
        qs = qs.filter(user=user)
    return [annotation_out(a) for a in qs[offset : offset + limit]]


@router.get("/annotations/{annotation_id}", response=AnnotationOut)
def annotations_detail(request: HttpRequest, annotation_id: PathId) -> dict[str, Any]:
    user = _user(request)
    ann = Annotation.objects.select_related("clip").filter(pk=annotation_id).first()
    if ann is not None:
        m = perm.membership_get(project_id=ann.clip.project_id, user=user)
        if (ann.user_id == user.pk and m is not None) or perm.role_at_least(m, Role.REVIEWER):
            return annotation_out(ann)
    raise NotFound(f"annotation {annotation_id} not found")


@router.get("/clips/{clip_id}/annotations", response=list[AnnotationOut])
def clip_annotations_list(request: HttpRequest, clip_id: PathId) -> list[dict[str, Any]]:
    clip, m = perm.clip_for_user(clip_id=clip_id, user=_user(request))
    if not perm.role_at_least(m, Role.REVIEWER):
        raise PermissionDenied("only reviewers see all annotations of a clip")
    return [annotation_out(a) for a in Annotation.objects.filter(clip=clip).order_by("pk")]


@router.get("/clips/{clip_id}/reviews", response=list[ReviewOut])
def reviews_list(request: HttpRequest, clip_id: PathId) -> list[dict[str, Any]]:
    clip, m = perm.clip_for_user(clip_id=clip_id, user=_user(request))
    if not perm.role_at_least(m, Role.REVIEWER):
        raise PermissionDenied("only reviewers see review decisions")
    rows = ReviewDecision.objects.filter(clip=clip).select_related("reviewer")
    return [_review_out(r) for r in rows.order_by("created_at", "pk")]


@router.post("/clips/{clip_id}/reviews", response={201: ReviewOut, 422: ErrorOut})
def reviews_create(request: HttpRequest, clip_id: PathId, payload: ReviewIn) -> Status:
    clip, m = perm.clip_for_user(clip_id=clip_id, user=_user(request))
    if not perm.role_at_least(m, Role.REVIEWER):
        raise PermissionDenied("only reviewers record review decisions")
    clip.project = m.project
    row = review_service.review_decide(
        clip=clip,
        reviewer=_user(request),
        decision=payload.decision,
        annotation_id=payload.annotation_id,
        labels=payload.labels,
        note=payload.note,
    )
    return Status(201, _review_out(row))


# --- tokens ---------------------------------------------------------------------------------------
# Session users may always manage their tokens; a bearer token only with the "tokens" scope.
TOKEN_ROUTES_AUTH = [ApiTokenAuth(scope="tokens"), django_auth]


def _token_row_out(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.pk,
        "prefix": row.prefix,
        "name": row.name,
        "scopes": row.scopes,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "revoked_reason": row.revoked_reason,
    }


@router.get(
    "/auth/tokens", response={200: list[TokenRowOut], 403: ErrorOut}, auth=TOKEN_ROUTES_AUTH
)
def tokens_list(request: HttpRequest) -> list[dict[str, Any]]:
    """Your tokens, newest first, revoked ones included; never the token itself."""
    return [_token_row_out(row) for row in api_tokens_of(user=_user(request))]


@router.post(
    "/auth/tokens",
    response={201: TokenOut, 403: ErrorOut, 422: ErrorOut, 429: ErrorOut},
    auth=TOKEN_ROUTES_AUTH,
)
def tokens_create(request: HttpRequest, payload: TokenIn) -> Status:
    """A personal token for ``Authorization: Bearer …``; shown once, store it safely."""
    row, token = api_token_create(
        user=_user(request),
        name=payload.name,
        scopes=payload.scopes,
        expires_in_days=payload.expires_in_days,
    )
    return Status(201, {**_token_row_out(row), "token": token})


@router.delete(
    "/auth/tokens/{token_id}",
    response={204: None, 403: ErrorOut, 404: ErrorOut},
    auth=TOKEN_ROUTES_AUTH,
)
def tokens_revoke(request: HttpRequest, token_id: int) -> Status:
    """Revoke one of your tokens (idempotent); another user's token is 404."""
    row = get_object_or_404(api_tokens_of(user=_user(request)), pk=token_id)
    api_token_revoke(token_row=row, reason="revoked by owner")
    return Status(204, None)


# --- taxonomy imports (large ones run on a worker) ------------------------------------------------


class TaxonomyImportOut(Schema):
    created: bool = Field(..., description="False when the content matched the latest version.")
    summary: str
    version: TaxonomyVersionOut


class TaxonomyImportJobOut(Schema):
    id: int
    name: str
    filename: str
    status: str = Field(..., description="queued, running, done or failed")
    n_nodes_total: int
    n_nodes_written: int
    percent: float
    error: str
    summary: str
    taxonomy_version_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@router.post(
    "/taxonomies/import",
    response={201: TaxonomyImportOut, 202: TaxonomyImportJobOut, 403: ErrorOut, 422: ErrorOut},
)
def taxonomies_import(
    request: HttpRequest,
    file: File[UploadedFile],
    name: Form[str],
    format: Form[str | None] = None,
    root: Form[str | None] = None,
) -> Status:
    """Import a taxonomy file (staff). Up to ``REFRAIN_TAXONOMY_INLINE_MAX_NODES`` nodes it is
    stored at once (201); larger files are queued for a worker (202: poll the job); more than
    ``REFRAIN_MAX_TAXONOMY_NODES`` is refused (422, with the reason)."""
    perm.require_staff(_user(request))
    try:
        outcome = taxonomy_import_submit(
            name=name,
            data=file.read(),
            filename=file.name or "",
            format=format or None,
            root=root or None,
            user=_user(request),
        )
    except ValueError as exc:  # TaxonomyFormatError too: the line or node at fault
        return Status(422, {"detail": str(exc), "code": "invalid"})
    if isinstance(outcome, TaxonomyImportJob):
        return Status(202, taxonomy_import_job_progress(job=outcome))
    return Status(
        201,
        {
            "created": outcome.created,
            "summary": outcome.summary(),
            "version": _version_out(outcome.version),
        },
    )


@router.get("/taxonomies/imports/{job_id}", response={200: TaxonomyImportJobOut, 404: ErrorOut})
def taxonomy_import_job_detail(request: HttpRequest, job_id: int) -> dict[str, Any]:
    """A queued taxonomy import: status and nodes written of the total (staff or its creator)."""
    user = _user(request)
    job = TaxonomyImportJob.objects.filter(pk=job_id).first()
    if job is None or not (perm.can_create_projects(user) or job.created_by_id == user.pk):
        raise NotFound(f"taxonomy import {job_id} not found")
    return taxonomy_import_job_progress(job=job)
