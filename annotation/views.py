"""Server-rendered pages: projects, the annotator page, review, project admin, audio files.

Views parse, check the role (``annotation.permissions``), call a service or selector, and render.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from annotation import permissions as perm
from annotation.audio_response import audio_response
from annotation.forms import (
    BucketImportForm,
    ClipUploadForm,
    InviteForm,
    ProjectCreateForm,
    ProjectPolicyForm,
    ReviewForm,
    RoleForm,
    TaxonomyImportForm,
    TokenCreateForm,
)
from annotation.models import (
    Annotation,
    Assignment,
    Clip,
    ImportJob,
    Membership,
    Project,
    ReviewDecision,
    Task,
    TaxonomyImportJob,
)
from annotation.services import clip_files
from annotation.services import members as members_service
from annotation.services import projects as projects_service
from annotation.services import review as review_service
from annotation.services import tasks as queue
from annotation.services import tokens as tokens_service
from annotation.services.audio_source import clip_audio_available, clip_served_audio
from annotation.services.clips import (
    ImportSourceError,
    clip_ids_of_upload,
    clip_upload,
    clips_import_bucket_submit,
)
from annotation.services.enqueue import Manual, task_enqueue
from annotation.services.media import media_local_path, media_presigned_url
from annotation.services.taxonomies import taxonomy_import_job_progress, taxonomy_import_submit
from annotation.services.visuals import clip_spectrogram_key, clip_visuals_request, png_bytes
from refrain.errors import Throttled

Role = Membership.Role
View = Callable[..., HttpResponse]


def project_role(role: str) -> Callable[[View], View]:
    """Require ``role`` in the project named by the ``slug`` URL argument; pass the membership."""

    def decorate(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            project_id = Project.objects.filter(slug=slug).values_list("pk", flat=True).first()
            if project_id is None:
                raise Http404("no such project")
            # NotFound and PermissionDenied go to the error middleware: Django's 404 page, a 403.
            membership = perm.require_role(project_id=project_id, user=request.user, role=role)
            return view(request, membership, *args, **kwargs)

        return wrapped

    return decorate


# --- home and project creation --------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("project", "project__taxonomy_version__taxonomy")
        .annotate(
            n_open=Count("project__tasks", filter=Q(project__tasks__status=Task.Status.OPEN)),
        )
        .order_by("project__name")
    )
    mine = dict(
        Annotation.objects.filter(user=request.user)
        .values("clip__project_id")
        .annotate(n=Count("pk"))
        .values_list("clip__project_id", "n")
    )
    rows = [(m, mine.get(m.project_id, 0)) for m in memberships]
    return render(
        request,
        "annotation/home.html",
        {"rows": rows, "can_create": perm.can_create_projects(request.user)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    if not perm.can_create_projects(request.user):
        return HttpResponseForbidden("only staff may create projects")
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = projects_service.project_create(
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                taxonomy_version=form.cleaned_data["taxonomy_version"],
                overlap=form.cleaned_data["overlap"],
                blind=form.cleaned_data["blind"],
                user=request.user,
            )
        except projects_service.ProjectError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Created {project.name}. Now add clips and members.")
            return redirect("project-clips", slug=project.slug)
    return render(request, "annotation/project_create.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def taxonomy_import_page(request: HttpRequest) -> HttpResponse:
    if not perm.can_create_projects(request.user):
        return HttpResponseForbidden("only staff may import taxonomies")
    form = TaxonomyImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            result = taxonomy_import_submit(
                name=form.cleaned_data["name"],
                data=upload.read(),
                filename=upload.name,
                user=request.user,
            )
        except ValueError as exc:  # TaxonomyFormatError is a ValueError with the line at fault
            form.add_error("file", str(exc))
        else:
            if isinstance(result, TaxonomyImportJob):  # large: a worker writes it
                return redirect("taxonomy-import-job", job_id=result.pk)
            messages.success(request, result.summary())
            return redirect("project-create")
    return render(request, "annotation/taxonomy_import.html", {"form": form})


@login_required
def taxonomy_import_job_page(request: HttpRequest, job_id: int) -> HttpResponse:
    """A large taxonomy import's progress; reloads itself until the worker is done."""
    job = get_object_or_404(TaxonomyImportJob, pk=job_id)
    if not (perm.can_create_projects(request.user) or job.created_by_id == request.user.pk):
        raise Http404("no such import")
    return render(
        request,
        "annotation/taxonomy_import_job.html",
        {"job": taxonomy_import_job_progress(job=job)},
    )


# --- account: API tokens --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def account_tokens(request: HttpRequest) -> HttpResponse:
    """List, create (the token shown this once) and revoke your personal API tokens."""
    default_days = settings.REFRAIN_TOKEN_DEFAULT_DAYS
    form = TokenCreateForm(default_days=default_days)
    new_token = None
    status = 200
    if request.method == "POST" and "revoke" in request.POST:
        try:
            token_id = int(request.POST["revoke"])
        except ValueError:
            raise Http404("no such token") from None
        row = get_object_or_404(tokens_service.api_tokens_of(user=request.user), pk=token_id)
        if tokens_service.api_token_revoke(token_row=row, reason="revoked by owner"):
            messages.success(request, f"Token {row.prefix}… revoked.")
        return redirect("account-tokens")
    if request.method == "POST":
        form = TokenCreateForm(request.POST, default_days=default_days)
        if form.is_valid():
            scopes = ["api", "tokens"] if form.cleaned_data["manage_tokens"] else ["api"]
            try:
                _, new_token = tokens_service.api_token_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    scopes=scopes,
                    expires_in_days=form.cleaned_data["expires_in_days"],
                )
            except tokens_service.TokenError as exc:
                form.add_error(None, str(exc))
            except Throttled as exc:
                form.add_error(None, exc.message)
                status = 429
            else:
                form = TokenCreateForm(default_days=default_days)
    return render(
        request,
        "annotation/account_tokens.html",
        {
            "form": form,
            "new_token": new_token,
            "tokens": tokens_service.api_tokens_of(user=request.user),
            "now": timezone.now(),
        },
        status=status,
    )


# --- project admin --------------------------------------------------------------------------------


@project_role(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    form = ProjectPolicyForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        try:
            projects_service.project_update_policy(
                project=project,
                overlap=form.cleaned_data["overlap"],
                blind=form.cleaned_data["blind"],
                lease_seconds=form.cleaned_data["lease_minutes"] * 60,
                taxonomy_version=form.cleaned_data["taxonomy_version"],
            )
        except projects_service.ProjectError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Settings saved.")
            return redirect("project-settings", slug=project.slug)
    return render(
        request,
        "annotation/project_settings.html",
        {"project": project, "membership": membership, "form": form, "tab": "settings"},
    )


@project_role(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def project_members(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    invite = InviteForm(request.POST if "invite" in request.POST else None)
    if request.method == "POST":
        try:
            if "invite" in request.POST and invite.is_valid():
                row = members_service.member_invite(
                    project=project,
                    username_or_email=invite.cleaned_data["user"],
                    role=invite.cleaned_data["role"],
                )
                messages.success(request, f"{row.user} is now {row.get_role_display().lower()}.")
                return redirect("project-members", slug=project.slug)
            change = RoleForm(request.POST)
            if "invite" not in request.POST and change.is_valid():
                target = get_object_or_404(
                    Membership, pk=change.cleaned_data["membership"], project=project
                )
                if change.cleaned_data["role"] == "remove":
                    members_service.member_remove(membership=target)
                    messages.success(request, f"Removed {target.user}.")
                else:
                    members_service.member_set_role(
                        membership=target, role=change.cleaned_data["role"]
                    )
                    messages.success(request, f"{target.user} is now {target.role}.")
                return redirect("project-members", slug=project.slug)
        except members_service.MemberError as exc:
            messages.error(request, str(exc))
    rows = project.memberships.select_related("user").order_by("role", "user__username")
    return render(
        request,
        "annotation/project_members.html",
        {
            "project": project,
            "membership": membership,
            "rows": rows,
            "invite": invite,
            "roles": Role.choices,
            "tab": "members",
        },
    )


@project_role(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def project_clips(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    bucket_form = BucketImportForm(request.POST if "bucket" in request.POST else None)
    if request.method == "POST" and "bucket" in request.POST and bucket_form.is_valid():
        try:
            job = clips_import_bucket_submit(
                project=project,
                uri=bucket_form.cleaned_data["bucket"],
                labels_from_folders=bucket_form.cleaned_data["labels_from_folders"],
                user=request.user,
            )
        except ImportSourceError as exc:
            bucket_form.add_error("bucket", str(exc))
        else:
            messages.success(request, f"Import of {job.source} queued for a worker.")
            return redirect("project-clips", slug=project.slug)
    form = ClipUploadForm(
        request.POST if "bucket" not in request.POST else None, request.FILES or None
    )
    if request.method == "POST" and "bucket" not in request.POST and form.is_valid():
        added, problems = 0, []
        for upload in form.cleaned_data["files"]:
            job, clip = clip_upload(project=project, upload=upload, user=request.user)
            if clip is not None and clip.status == Clip.Status.READY:
                task_enqueue(
                    project=project,
                    sources=Manual.for_clips(
                        clip_ids_of_upload(clip), priority=form.cleaned_data.get("priority") or 0.0
                    ),
                )
                added += 1
            else:
                reason = "; ".join(p["reason"] for p in job.problems) or "already in the project"
                problems.append(f"{upload.name}: {reason}")
        if added:
            messages.success(request, f"Added {added} clip(s) to the queue.")
        for problem in problems:
            messages.error(request, problem)
        return redirect("project-clips", slug=project.slug)
    counts = Clip.objects.filter(project=project).aggregate(
        ready=Count("pk", filter=Q(status=Clip.Status.READY)),
        failed=Count("pk", filter=Q(status=Clip.Status.FAILED)),
    )
    return render(
        request,
        "annotation/project_clips.html",
        {
            "project": project,
            "membership": membership,
            "form": form,
            "bucket_form": bucket_form,
            "counts": counts,
            "clips": Clip.objects.filter(project=project).order_by("-pk")[:50],
            "jobs": ImportJob.objects.filter(project=project)[:10],
            "tab": "clips",
        },
    )


@project_role(Role.ADMIN)
def project_queue(request: HttpRequest, membership: Membership) -> HttpResponse:
    from django.utils import timezone

    project = membership.project
    by_state = (
        Task.objects.filter(project=project)
        .values("kind", "status")
        .annotate(n=Count("pk"))
        .order_by("kind", "status")
    )
    holders = (
        Assignment.objects.filter(
            task__project=project,
            status=Assignment.Status.ACTIVE,
            lease_expires_at__gt=timezone.now(),
        )
        .select_related("user", "task")
        .order_by("lease_expires_at")[:100]
    )
    upcoming = (
        Task.objects.filter(project=project, status=Task.Status.OPEN)
        .select_related("clip")
        .order_by("-priority", "pk")[:50]
    )
    return render(
        request,
        "annotation/project_queue.html",
        {
            "project": project,
            "membership": membership,
            "by_state": by_state,
            "holders": holders,
            "upcoming": upcoming,
            "tab": "queue",
        },
    )


# --- the annotator page ---------------------------------------------------------------------------


@project_role(Role.ANNOTATOR)
def annotate(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    version = project.taxonomy_version
    nodes = list(
        version.nodes.order_by("index").values("id", "key", "name", "path", "depth", "parent_id")
    )
    return render(
        request,
        "annotation/annotate.html",
        {
            "project": project,
            "membership": membership,
            "version": version,
            "nodes": nodes,
            "config": {
                "projectId": project.pk,
                "versionId": version.pk,
                "nextUrl": f"/api/v1/projects/{project.pk}/tasks/next",
                "blind": project.blind,
                "leaseSeconds": project.lease_seconds,
            },
            "tab": "annotate",
        },
    )


# --- review ---------------------------------------------------------------------------------------


@project_role(Role.REVIEWER)
def review_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    open_reviews = (
        Task.objects.filter(project=project, kind=Task.Kind.REVIEW, status=Task.Status.OPEN)
        .select_related("clip")
        .order_by("-priority", "pk")[:100]
    )
    recent = (
        Clip.objects.filter(project=project, annotations__isnull=False)
        .annotate(
            n_annotations=Count("annotations", distinct=True),
            n_decisions=Count("review_decisions", distinct=True),
        )
        .order_by("-pk")[:100]
    )
    return render(
        request,
        "annotation/review_list.html",
        {
            "project": project,
            "membership": membership,
            "open_reviews": open_reviews,
            "recent": recent,
            "tab": "review",
        },
    )


@project_role(Role.REVIEWER)
@require_POST
def review_next(request: HttpRequest, membership: Membership) -> HttpResponse:
    assignment = queue.task_next_for_annotator(
        project_id=membership.project_id, user=request.user, kinds=(Task.Kind.REVIEW,)
    )
    if assignment is None:
        messages.info(request, "No clips are waiting for review.")
        return redirect("review-list", slug=membership.project.slug)
    return redirect("review-clip", slug=membership.project.slug, clip_id=assignment.task.clip_id)


@project_role(Role.REVIEWER)
@require_http_methods(["GET", "POST"])
def review_clip(request: HttpRequest, membership: Membership, clip_id: int) -> HttpResponse:
    project = membership.project
    clip = get_object_or_404(Clip, pk=clip_id, project=project)
    clip.project = project
    form = ReviewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            review_service.review_decide(
                clip=clip,
                reviewer=request.user,
                decision=form.cleaned_data["decision"],
                annotation_id=form.cleaned_data["annotation"],
                labels=form.label_list(),
                note=form.cleaned_data["note"] or "",
            )
        except queue.QueueError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Decision recorded.")
            return redirect("review-list", slug=project.slug)
    version = project.taxonomy_version
    nodes = list(
        version.nodes.order_by("index").values("id", "key", "name", "path", "depth", "parent_id")
    )
    return render(
        request,
        "annotation/review_clip.html",
        {
            "project": project,
            "membership": membership,
            "clip": clip,
            "annotations": review_service.clip_annotations(clip=clip),
            "decisions": ReviewDecision.objects.filter(clip=clip)
            .select_related("reviewer")
            .order_by("-created_at"),
            "form": form,
            "nodes": nodes,
            "config": {"versionId": version.pk, "projectId": project.pk},
            "tab": "review",
        },
    )


# --- audio ----------------------------------------------------------------------------------------


@login_required
def clip_audio(request: HttpRequest, clip_id: int) -> HttpResponse:
    """The clip's file, with single-range requests (``Range: bytes=a-b``) so players can seek.

    Everyone gets the tag-free served copy under a neutral name; a project admin may ask for the
    imported original with ``?original=1``. Failed clips, missing files and anything outside the
    import roots are 404.
    """
    clip, membership = perm.clip_for_user(clip_id=clip_id, user=request.user)  # or NotFound: 404
    original = request.GET.get("original") == "1" and perm.role_at_least(membership, Role.ADMIN)
    try:
        served = clip_served_audio(clip=clip, original=original)
    except clip_files.ClipFileUnavailable as exc:
        raise Http404("the audio file is missing") from exc
    response = audio_response(request, clip=clip, served=served)
    response.setdefault("Cache-Control", "private, max-age=3600")
    return response


@login_required
def clip_spectrogram(request: HttpRequest, clip_id: int) -> HttpResponse:
    """The clip's spectrogram as made by a worker; while it is missing, a placeholder with 202 (and
    a worker is asked for it). Never decodes audio here."""
    clip, _ = perm.clip_for_user(clip_id=clip_id, user=request.user)  # or NotFound: 404
    key = clip_spectrogram_key(clip)
    if key is None:
        if not clip_audio_available(clip):
            raise Http404("cannot read the audio")
        clip_visuals_request(clip)
        pending = HttpResponse(_PENDING_PNG, content_type="image/png", status=202)
        pending["Cache-Control"] = "no-store"
        return pending
    path = media_local_path(key)
    response: HttpResponse
    if path is not None:
        response = FileResponse(open(path, "rb"), content_type="image/png")  # noqa: SIM115
        response["Cache-Control"] = "private, max-age=86400"
    else:  # the media bucket: named by content hash, nothing to hide
        response = HttpResponseRedirect(media_presigned_url(key=key, content_type="image/png"))
        response["Cache-Control"] = "private, no-store"
    return response


# A dark 8x2 image shown while a spectrogram is being made.
_PENDING_PNG = png_bytes(np.full((2, 8, 3), 11, dtype=np.uint8))


def project_url(project: Project, name: str) -> str:
    return reverse(name, kwargs={"slug": project.slug})
