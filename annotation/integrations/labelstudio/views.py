"""Endpoints Label Studio calls (the annotation webhook, signed clip audio) and the project's Label
Studio settings page."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from kombu.exceptions import OperationalError

from annotation.audio_response import audio_response
from annotation.integrations.labelstudio.forms import ACTIONS, LinkForm
from annotation.integrations.labelstudio.services import (
    WEBHOOK_ACTIONS,
    WEBHOOK_HEADER,
    clip_audio_token_check,
    ls_links_overview,
    ls_project_link,
    routed_relabel_tasks,
)
from annotation.integrations.labelstudio.tasks import (
    ls_ingest_annotation,
    ls_pull_link,
    ls_push_link,
    ls_request_relabels,
    ls_update_config,
)
from annotation.models import Clip, LabelStudioLink, Membership, Task
from annotation.permissions import Role
from annotation.services.audio_source import clip_served_audio
from annotation.services.clip_files import ClipFileUnavailable
from annotation.views import project_role
from refrain.errors import ApplicationError
from refrain.jobs import publish_fast


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def webhook_payload(body: bytes) -> dict[str, Any] | str:
    """The parts of an LS annotation webhook the worker needs, or a message saying what is wrong."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"body is not JSON: {exc}"
    if not isinstance(payload, dict):
        return "body must be a JSON object"
    action = payload.get("action")
    if not isinstance(action, str):
        return "'action' is missing"
    if action not in WEBHOOK_ACTIONS:
        return {"action": action}  # another event: acknowledged and ignored
    annotation, task = payload.get("annotation"), payload.get("task")
    if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), int):
        return "'annotation' must be an object with an integer 'id'"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return "'task' must be an object with a 'data' object"
    if "refrain_clip_id" not in task["data"]:
        return "task.data.refrain_clip_id is missing: not a task Refrain pushed"
    if not isinstance(annotation.get("result", []), list):
        return "'annotation.result' must be a list"
    # Only what ingest reads travels through the broker (LS also sends the whole project).
    keep = ("id", "result", "completed_by", "created_username", "lead_time", "was_cancelled")
    return {
        "action": action,
        "annotation": {k: annotation[k] for k in keep if k in annotation},
        "task": {
            "id": task.get("id"),
            "data": {"refrain_clip_id": task["data"]["refrain_clip_id"]},
        },
    }


def _publish_fast(link_id: int, payload: dict[str, Any]) -> None:
    """Send the ingest task failing fast (:func:`refrain.jobs.publish_fast`): with the broker down
    the webhook answers 503 within Label Studio's 1 s, and the scheduled reconciliation
    (``ls_reconcile_links``) pulls the annotation."""
    publish_fast(ls_ingest_annotation, args=(link_id, payload))


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def webhook(request: HttpRequest, link_id: int) -> HttpResponse:
    """Label Studio gives webhooks 1 s and never retries: check, enqueue, answer. No ingest here."""
    link = LabelStudioLink.objects.filter(id=link_id).only("id", "webhook_secret").first()
    sent = request.headers.get(WEBHOOK_HEADER, "")
    # The same answer for an unknown link and a wrong secret: ids are not probed this way.
    if link is None or not hmac.compare_digest(sent.encode(), link.webhook_secret.encode()):
        return _bad("unknown link or wrong webhook secret", status=403)
    try:
        body = request.body
    except RequestDataTooBig:
        return _bad("payload too large", status=413)
    parsed = webhook_payload(body)
    if isinstance(parsed, str):
        return _bad(parsed)
    if "annotation" not in parsed:
        return JsonResponse({"ignored": parsed["action"]})
    try:
        transaction.on_commit(lambda: _publish_fast(link.id, parsed))
    except OperationalError:
        return _bad(
            "Refrain's task queue is unavailable; the annotation arrives with the next scheduled "
            "pull",
            status=503,
        )
    return JsonResponse({"queued": True}, status=200)


@require_GET
def clip_audio(request: HttpRequest, token: str) -> HttpResponse:
    """A clip's audio for Label Studio's player; the signed token is the permission."""
    ids = clip_audio_token_check(token)
    if ids is None:
        raise Http404("unknown audio link")
    link_id, clip_id = ids
    link = LabelStudioLink.objects.filter(id=link_id).only("project_id", "base_url").first()
    clip = Clip.objects.filter(id=clip_id).first()
    if link is None or clip is None or clip.project_id != link.project_id:
        raise Http404("unknown audio link")
    try:
        served = clip_served_audio(clip=clip)
    except ClipFileUnavailable as exc:
        raise Http404("the audio file is missing") from exc
    # With Range support: Label Studio's waveform player seeks with byte ranges.
    response = audio_response(request, clip=clip, served=served)
    # LS's waveform player fetches the file with XHR from its own origin.
    origin = urlsplit(link.base_url)
    response["Access-Control-Allow-Origin"] = f"{origin.scheme}://{origin.netloc}"
    return response


# --- the project's Label Studio settings page ----------------------------------------------------


@project_role(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def link_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Link the project to Label Studio (idempotent, as ``manage.py labelstudio link``) and run
    the link's jobs: push, pull, config update, second opinions (queued for a worker)."""
    project = membership.project
    form = LinkForm(request.POST if request.POST.get("form") == "link" else None)
    if request.method == "POST" and request.POST.get("form") == "link":
        if form.is_valid():
            try:
                link = ls_project_link(
                    project=project,
                    base_url=form.cleaned_data["url"],
                    api_key=form.cleaned_data["token"],
                    ls_project_id=form.cleaned_data["ls_project"],
                    refrain_url=form.cleaned_data["refrain_url"] or "",
                )
            except ApplicationError as exc:  # unreachable, refused, a conflicting link
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request,
                    f"Linked to Label Studio project {link.ls_project_id} "
                    f"({'webhook registered' if link.ls_webhook_id else 'no webhook: pulls only'}).",
                )
                return redirect("labelstudio-settings", slug=project.slug)
    elif request.method == "POST":
        action = request.POST.get("action", "")
        if action not in ACTIONS:
            return HttpResponse(f"unknown action {action!r}", status=400, content_type="text/plain")
        raw = request.POST.get("link", "")
        link_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0  # 0: no such link, a 404
        link = get_object_or_404(LabelStudioLink, pk=link_id, project=project)
        _link_action_queue(link=link, action=action)
        messages.success(
            request, f"Queued for a worker: {ACTIONS[action].lower()} (link {link.pk})."
        )
        return redirect("labelstudio-settings", slug=project.slug)
    return render(
        request,
        "annotation/labelstudio_settings.html",
        {
            "project": project,
            "membership": membership,
            "form": form,
            "links": ls_links_overview(project=project),
            "actions": ACTIONS,
            "tab": "labelstudio",
        },
    )


def _link_action_queue(*, link: LabelStudioLink, action: str) -> None:
    if action == "second-opinions":
        ids = list(
            routed_relabel_tasks()
            .filter(project=link.project, status=Task.Status.OPEN)
            .values_list("pk", flat=True)
        )
        ls_request_relabels.delay_on_commit(ids)
        return
    task = {"push": ls_push_link, "pull": ls_pull_link, "update-config": ls_update_config}[action]
    task.delay_on_commit(link.pk)
