"""Quality pages: the project's issue list, a clip's issue page, the dashboard. Reviewers and
admins of the project only (annotators are blind to other people's labels and the model's guess)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.models import Clip, Membership, TaxonomyNode
from annotation.permissions import role_at_least
from annotation.views import project_role
from quality import figures
from quality import selectors as sel
from quality.export import FORMATS, labels_download
from quality.forms import LoopSettingsForm
from quality.models import LabelIssue
from quality.services import jobs as jobs_service
from quality.services.cycle import cycle_enqueue
from quality.services.jobs import CANCELLABLE
from quality.services.loop import LoopSettingsError, project_loop_update
from refrain.errors import Conflict, NotFound

Role = Membership.Role
PAGE_SIZE = 50


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@project_role(Role.REVIEWER)
def issue_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    q = request.GET
    node: TaxonomyNode | None = None
    if q.get("node"):
        node = (
            TaxonomyNode.objects.filter(
                version_id=project.taxonomy_version_id, key=q["node"]
            ).first()
            or TaxonomyNode.objects.filter(
                version_id=project.taxonomy_version_id, pk=_int_or_none(q["node"]) or 0
            ).first()
        )
    issue_type = q.get("type") if q.get("type") in LabelIssue.Type.values else None
    status = q.get("status") if q.get("status") in LabelIssue.Status.values else None
    depth = _int_or_none(q.get("depth"))
    qs = sel.issue_list(
        project=project,
        issue_type=issue_type,
        status=status,
        node_id=node.pk if node else (-1 if q.get("node") else None),
        depth=depth,
    )
    page = Paginator(qs, PAGE_SIZE).get_page(q.get("page"))
    params = q.copy()
    params.pop("page", None)
    return render(
        request,
        "quality/issue_list.html",
        {
            "project": project,
            "membership": membership,
            "tab": "quality",
            "page": page,
            "types": LabelIssue.Type.choices,
            "statuses": LabelIssue.Status.choices,
            "f": {
                "type": issue_type or "",
                "status": status or "",
                "node": q.get("node", ""),
                "depth": "" if depth is None else depth,
            },
            "querystring": params.urlencode(),
            "counts": sel.issue_counts(project=project)["by_status"],
            "near_chance": sel.near_chance_paths(project=project),
        },
    )


@project_role(Role.REVIEWER)
def clip_issues(request: HttpRequest, membership: Membership, clip_id: int) -> HttpResponse:
    project = membership.project
    clip = Clip.objects.filter(pk=clip_id, project=project).select_related("project").first()
    if clip is None:
        raise Http404("no such clip in this project")
    return render(
        request,
        "quality/clip.html",
        {
            "project": project,
            "membership": membership,
            "tab": "quality",
            "clip": clip,
            # The annotator's player: the served (tag-free) copy at /clips/<id>/audio, as everyone
            # but an admin asking for the original hears it (docs/security.md, blind mode).
            "player_config": {
                "audio_url": reverse("clip-audio", args=[clip.pk]),
                "clip": {
                    "id": clip.pk,
                    "duration_s": clip.duration_s,
                    "segment_start_s": clip.segment_start_s,
                    "segment_end_s": clip.segment_end_s,
                    "spectrogram_url": reverse("clip-spectrogram", args=[clip.pk]),
                },
            },
            **sel.clip_quality_view(clip=clip),
        },
    )


@project_role(Role.REVIEWER)
def dashboard(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    frames = sel.dashboard_frames(project=project)
    figs = [
        figures.issues_by_type_depth_figure(frames["by_type_depth"]),
        figures.score_distribution_figure(frames["scores"]),
        figures.consensus_quality_figure(frames["consensus"]),
        figures.annotator_quality_figure(frames["annotators"]),
        figures.cycle_history_figure(frames["cycles"]),
    ]
    return render(
        request,
        "quality/dashboard.html",
        {
            "project": project,
            "membership": membership,
            "tab": "quality",
            "figures": [f.to_html(full_html=False, include_plotlyjs=False) for f in figs],
            "cycles": sel.recent_cycles(project=project, limit=10),
            "can_start_cycle": role_at_least(membership, Role.ADMIN),
            "counts": sel.issue_counts(project=project)["by_status"],
        },
    )


#: How often the jobs page fetches its table again (``static/refrain/jobs.js``).
JOBS_REFRESH_MS = 3000


def _jobs_context(membership: Membership) -> dict[str, Any]:
    project = membership.project
    overview = sel.jobs_overview(project=project)
    return {
        "project": project,
        "membership": membership,
        "tab": "jobs",
        "sections": [(label, overview[key]) for key, label in sel.JOB_KINDS],
        "stale_seconds": settings.REFRAIN_JOB_STALE_SECONDS,
        "can_manage": role_at_least(membership, Role.ADMIN),
        "cancellable": CANCELLABLE,
        "refresh_ms": JOBS_REFRESH_MS,
        "refresh_s": JOBS_REFRESH_MS // 1000,
    }


@project_role(Role.REVIEWER)
def jobs(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Recent background jobs of every kind: status, progress, worker, heartbeat, resumes, errors;
    the table refreshes itself from :func:`jobs_rows`; admins get retry and cancel buttons."""
    return render(request, "quality/jobs.html", _jobs_context(membership))


@project_role(Role.REVIEWER)
def jobs_rows(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The jobs page's tables alone, which the page fetches every few seconds."""
    return render(request, "quality/_jobs_rows.html", _jobs_context(membership))


def _job_action(
    request: HttpRequest,
    membership: Membership,
    action: Callable[..., dict[str, Any]],
    kind: str,
    job_pk: int,
) -> JsonResponse:
    try:
        done = action(project=membership.project, kind=kind, job_id=job_pk, user=request.user)
    except (NotFound, Conflict) as exc:
        # The API's statuses (refrain.api.ERROR_STATUS, a layer above): tests pin that they agree.
        status = 404 if isinstance(exc, NotFound) else 409
        return JsonResponse({"detail": exc.message, "code": exc.code}, status=status)
    return JsonResponse(done, status=202)


@require_POST
@project_role(Role.ADMIN)
def job_retry(request: HttpRequest, membership: Membership, kind: str, job_pk: int) -> JsonResponse:
    """Send a failed job again (``quality.services.jobs.job_retry``); JSON, 202 when queued."""
    return _job_action(request, membership, jobs_service.job_retry, kind, job_pk)


@require_POST
@project_role(Role.ADMIN)
def job_cancel(
    request: HttpRequest, membership: Membership, kind: str, job_pk: int
) -> JsonResponse:
    """Stop a queued or running feature extraction or cycle at its next boundary; JSON."""
    return _job_action(request, membership, jobs_service.job_cancel, kind, job_pk)


@project_role(Role.REVIEWER)
def labels_export(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Download the project's labels (``?format=csv|jsonl``, ``&labelled_only=1``)."""
    fmt = request.GET.get("format", "csv")
    if fmt not in FORMATS:
        return HttpResponse(
            f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}",
            status=400,
            content_type="text/plain",
        )
    labelled_only = request.GET.get("labelled_only", "") in ("1", "true", "yes", "on")
    return labels_download(membership.project, fmt, labelled_only=labelled_only)  # type: ignore[arg-type]


@require_POST
@project_role(Role.ADMIN)
def cycle_start(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The dashboard's "Run relabel cycle now": queue it on the workers, come back to the table."""
    cycle, created = cycle_enqueue(project=membership.project)
    if created:
        messages.success(
            request, f"Relabel cycle {cycle.pk} queued: retrain -> detect -> route -> acquire."
        )
    else:
        messages.info(
            request,
            f"Relabel cycle {cycle.pk} is already {cycle.status}; asked the workers to carry it on.",
        )
    return redirect("quality-dashboard", slug=membership.project.slug)


@project_role(Role.ADMIN)
def loop_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    """What the relabel cycle trains on and how, what it routes and acquires, and when it runs."""
    project = membership.project
    form = LoopSettingsForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        try:
            project_loop_update(project=project, settings=form.settings())
        except LoopSettingsError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Loop settings saved.")
            return redirect("quality-loop-settings", slug=project.slug)
    return render(
        request,
        "quality/loop_settings.html",
        {"project": project, "membership": membership, "form": form, "tab": "loop"},
    )
