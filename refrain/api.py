"""The one NinjaAPI instance, served at ``/api/v1/``. Apps add their routers here.

Authentication: ``Authorization: Bearer <token>`` (personal API tokens) or the browser session
(with its CSRF token on writes). Typed service errors become 4xx answers with a ``detail`` message
and a machine-readable ``code``; bad input never reaches a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError
from ninja.security import django_auth

from active_learning.api import router as models_router
from annotation.api import router as annotation_router
from annotation.auth import ApiTokenAuth
from annotation.permissions import NotFound, PermissionDenied
from annotation.services.annotations import LabelError
from annotation.services.members import MemberError
from annotation.services.projects import ProjectError
from annotation.services.tasks import QueueError
from annotation.services.throttle import Throttled
from annotation.services.tokens import TokenError
from quality.api import router as quality_router
from refrain.middleware import RETRY_AFTER_S, UNAVAILABLE, error_code, unavailable_detail

logger = logging.getLogger("refrain.errors")


class RefrainAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        return document_errors(super().get_openapi_schema(**kwargs))


api = RefrainAPI(
    title="Refrain API",
    version="1",
    description=(
        "Projects, taxonomies, clips, the work queue, annotations and reviews; model versions; "
        "label issues and relabel cycles."
    ),
    urls_namespace="api",
    auth=[ApiTokenAuth(scope="api"), django_auth],
)
api.add_router("/", annotation_router)
api.add_router("/", models_router)
api.add_router("/", quality_router)


def _error(request: HttpRequest, status: int, message: str, code: str) -> HttpResponse:
    return api.create_response(request, {"detail": message, "code": code}, status=status)


@api.exception_handler(QueueError)
def _queue_error(request: HttpRequest, exc: QueueError) -> HttpResponse:
    return _error(request, exc.status, exc.message, exc.code)


@api.exception_handler(NotFound)
def _not_found(request: HttpRequest, exc: NotFound) -> HttpResponse:
    return _error(request, 404, exc.message, "not_found")


@api.exception_handler(PermissionDenied)
def _denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, exc.message, "permission_denied")


@api.exception_handler(LabelError)
@api.exception_handler(ProjectError)
@api.exception_handler(MemberError)
@api.exception_handler(TokenError)
def _invalid(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, 422, str(exc), "invalid")


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    response = _error(request, 429, exc.message, "throttled")
    response["Retry-After"] = str(exc.retry_after)
    return response


# --- errors: every 4xx/5xx is {"detail", "code"} and documented (issue 12) ------------------------


class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ApiError(Schema):
    """Every error answer of the API; ``errors`` lists the fields at fault on a 422."""

    detail: str
    code: str
    errors: list[FieldError] | None = None


# Statuses any operation may answer: authentication, role, membership, input, throttling, outage.
COMMON_ERRORS = {
    400: "Malformed request (a body that is not JSON)",
    401: "Not authenticated: no valid bearer token or session",
    403: "Authenticated, but the role in this project is too low (or a CSRF failure)",
    404: "Not found, or not among your projects",
    422: "Invalid input: ``errors`` lists the fields at fault",
    429: "Too many requests; see ``Retry-After``",
    503: "The database or the task queue is unavailable; see ``Retry-After``",
}


def document_errors(schema: Any) -> Any:
    """Document every error status on every operation with the one :class:`ApiError` shape."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ApiError.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        components[name] = definition
    components["ApiError"] = error_schema
    ref = {"$ref": "#/components/schemas/ApiError"}
    headers = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = {"application/json": {"schema": ref}}
                    if int(status) in (429, 503):
                        response["headers"] = headers
    return schema


def _rollback() -> None:
    # ATOMIC_REQUESTS commits when the view returns normally; an answer made from an unexpected
    # error must not commit what the operation half wrote.
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        transaction.set_rollback(True)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "invalid")),
        }
        for e in exc.errors
    ]
    detail = (
        "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        or "invalid input"
    )
    return api.create_response(
        request,
        {"detail": detail, "code": "validation_error", "errors": errors},
        status=422,
    )


@api.exception_handler(Http404)
def _http404(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "not found", "not_found")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, exc.message, error_code(exc.status_code))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    detail = "authentication required: a bearer token or a session"
    return _error(request, exc.status_code, detail, "not_authenticated")


@api.exception_handler(AuthorizationError)
def _unauthorized(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
    return _error(request, exc.status_code, exc.message, "permission_denied")


def _unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    _rollback()
    detail, code = unavailable_detail(exc)
    logger.warning("%s %s: %s (%s)", request.method, request.path, code, exc)
    response = _error(request, 503, detail, code)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


for _exc in UNAVAILABLE:
    api.add_exception_handler(_exc, _unavailable)  # type: ignore[arg-type]


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    _rollback()
    logger.exception("%s %s failed", request.method, request.path, exc_info=exc)
    return _error(request, 500, "internal error; it has been logged", "server_error")
