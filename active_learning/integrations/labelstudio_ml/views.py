"""Label Studio's ML backend protocol (label-studio-ml-backend ``label_studio_ml/api.py``), one URL
per link: ``GET health``, ``POST setup``, ``POST predict``, ``POST webhook`` (and the older
``POST train``). Every call carries the link's basic auth. Label Studio gives ``health`` 1 s and
``setup`` 3 s: nothing here waits on a worker; training is only enqueued, failing fast when the
broker is down. Bad requests get a JSON 4xx, never a 500."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from kombu.exceptions import OperationalError

from active_learning.integrations.labelstudio_ml.services import (
    MLPredictionsUnavailable,
    ml_auth_check,
    ml_model_version,
    ml_predict,
)
from active_learning.models import JobStatus, ModelVersion
from annotation.integrations.labelstudio.convert import CONTROL_NAME, OBJECT_NAME
from annotation.integrations.labelstudio.tasks import ls_ingest_annotation
from annotation.integrations.labelstudio.views import webhook_payload
from annotation.models import LabelStudioLink
from refrain.jobs import publish_fast

TRAIN_ACTIONS = ("START_TRAINING",)

View = Callable[..., HttpResponse]


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _authenticated(view: Callable[[HttpRequest, LabelStudioLink], HttpResponse]) -> View:
    """Resolve the link and check its basic auth; the same 401 for an unknown link and a wrong
    password, so link ids cannot be probed. Label Studio tells its user "authentication
    parameters were either not provided or are incorrect" on a 401."""

    @wraps(view)
    def wrapped(request: HttpRequest, link_id: int) -> HttpResponse:
        link = (
            LabelStudioLink.objects.select_related("project__taxonomy_version")
            .filter(id=link_id)
            .first()
        )
        if link is None or not ml_auth_check(
            link=link, authorization=request.headers.get("Authorization", "")
        ):
            response = _bad("unknown link or wrong credentials", status=401)
            response["WWW-Authenticate"] = 'Basic realm="Refrain ML backend"'
            return response
        return view(request, link)

    return csrf_exempt(transaction.non_atomic_requests(wrapped))


def _json_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        payload = json.loads(request.body)
    except RequestDataTooBig:
        return _bad("payload too large", status=413)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _bad(f"body is not JSON: {exc}")
    if not isinstance(payload, dict):
        return _bad("body must be a JSON object")
    return payload


def _ls_project_id(value: Any) -> int | None:
    """Label Studio names the project ``"<id>.<created timestamp>"`` (or by its id)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return _ls_project_id(value.get("id"))
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def _project_body(request: HttpRequest, link: LabelStudioLink) -> dict[str, Any] | JsonResponse:
    """The JSON body of a request that may name its Label Studio project, or the 4xx to answer:
    a body that is not a JSON object, or one naming another project than the link's."""
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    wrong = _wrong_project(link, body.get("project"))
    return wrong if wrong is not None else body


def _wrong_project(link: LabelStudioLink, value: Any) -> JsonResponse | None:
    """A 400 when the request names another Label Studio project than the link's (None when it
    names none or the right one)."""
    if value is None:
        return None
    pid = _ls_project_id(value)
    if pid is None:
        return _bad(f"'project' is not a Label Studio project id: {value!r}")
    if pid != link.ls_project_id:
        return _bad(
            f"this ML backend URL serves Label Studio project {link.ls_project_id}, not {pid}"
        )
    return None


@require_GET
@_authenticated
def health(request: HttpRequest, link: LabelStudioLink) -> HttpResponse:
    return JsonResponse(
        {"status": "UP", "model_class": "Refrain", "model_version": ml_model_version(link=link)}
    )


def _schema_problem(schema: Any) -> str | None:
    """Why a labelling config cannot take Refrain's predictions (None when it can)."""
    if not isinstance(schema, str) or not schema.strip():
        return "'schema' (the labelling config) is missing"
    try:
        root = ET.fromstring(schema)
    except ET.ParseError as exc:
        return f"'schema' is not XML: {exc}"
    for tag in root.iter("Taxonomy"):
        if tag.get("name") == CONTROL_NAME and tag.get("toName") == OBJECT_NAME:
            return None
    return (
        f'the labelling config has no <Taxonomy name="{CONTROL_NAME}" toName="{OBJECT_NAME}">: '
        "Refrain predicts for the config its link generated (manage.py labelstudio update-config)"
    )


@require_POST
@_authenticated
def setup(request: HttpRequest, link: LabelStudioLink) -> HttpResponse:
    body = _project_body(request, link)
    if isinstance(body, JsonResponse):
        return body
    problem = _schema_problem(body.get("schema"))
    if problem is not None:
        return _bad(problem, status=422)
    return JsonResponse({"model_version": ml_model_version(link=link)})


@require_POST
@_authenticated
def predict(request: HttpRequest, link: LabelStudioLink) -> HttpResponse:
    body = _project_body(request, link)
    if isinstance(body, JsonResponse):
        return body
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        return _bad("'tasks' must be a list of task objects")
    try:
        results = ml_predict(link=link, tasks=tasks)
    except MLPredictionsUnavailable as exc:
        return _bad(str(exc), status=409)
    return JsonResponse({"results": results})


def _start_training(link: LabelStudioLink) -> HttpResponse:
    # active_learning.tasks imports the training services, which are heavy for a web import path.
    from active_learning.tasks import train_project_model

    busy = (
        ModelVersion.objects.filter(
            project_id=link.project_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        )
        .order_by("-number")
        .first()
    )
    if busy is not None:
        return JsonResponse({"status": "already training", "model_version": busy.number})
    try:
        publish_fast(
            train_project_model,
            args=(link.project_id,),
            kwargs={"trigger": ModelVersion.Trigger.MANUAL},
        )
    except OperationalError:
        return _bad("Refrain's task queue is unavailable; start the training later", status=503)
    return JsonResponse({"status": "queued"}, status=201)


@require_POST
@_authenticated
def webhook(request: HttpRequest, link: LabelStudioLink) -> HttpResponse:
    """``START_TRAINING`` queues a retrain of the link's project (whose predictions are pushed
    when it is done); ``ANNOTATION_CREATED``/``_UPDATED`` queue an ingest, as the link's own
    webhook does (idempotent: one Label Studio annotation is stored once); any other event is
    acknowledged and ignored (Refrain's annotations are never deleted)."""
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    action = body.get("action")
    if not isinstance(action, str):
        return _bad("'action' is missing")
    if action in TRAIN_ACTIONS:
        wrong = _wrong_project(link, body.get("project"))
        return wrong if wrong is not None else _start_training(link)
    parsed = webhook_payload(request.body)
    if isinstance(parsed, str):
        return _bad(parsed)
    if "annotation" not in parsed:
        return JsonResponse({"ignored": action})
    try:
        publish_fast(ls_ingest_annotation, args=(link.pk, parsed))
    except OperationalError:
        return _bad(
            "Refrain's task queue is unavailable; the annotation arrives with the next scheduled "
            "pull",
            status=503,
        )
    return JsonResponse({"queued": True})


@require_POST
@_authenticated
def train(request: HttpRequest, link: LabelStudioLink) -> HttpResponse:
    """The older protocol's training call (Label Studio without its webhook-training flag)."""
    body = _project_body(request, link)
    return body if isinstance(body, JsonResponse) else _start_training(link)
