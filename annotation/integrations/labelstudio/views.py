"""Endpoints Label Studio calls: the annotation webhook and signed clip audio."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from kombu.exceptions import OperationalError

from annotation.audio_response import audio_response
from annotation.integrations.labelstudio.services import (
    WEBHOOK_ACTIONS,
    WEBHOOK_HEADER,
    clip_audio_token_check,
)
from annotation.integrations.labelstudio.tasks import ls_ingest_annotation
from annotation.models import Clip, LabelStudioLink
from annotation.services.audio_source import clip_served_audio
from annotation.services.clip_files import ClipFileUnavailable
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
