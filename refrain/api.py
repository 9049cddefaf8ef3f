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
from quality.api import router as quality_router
from refrain.errors import (
    ApplicationError,
    Conflict,
    Invalid,
    NotFound,
    PermissionDenied,
    Throttled,
    Unavailable,
)
from refrain.middleware import RETRY_AFTER_S, UNAVAILABLE, error_code, unavailable_detail
from taxonomy.formats import TaxonomyFormatError

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


# --- application errors: the one table from their kinds to HTTP statuses --------------------------

# A service's error is found here by the first of its classes (its MRO) that the table names, so
# ``TaskNotFound(QueueError, NotFound)`` is a 404; a bare ``ApplicationError`` is a 400. The API
# answers with the error's ``message`` and ``code``; pages (``ErrorResponsesMiddleware``) with the
# same status.
ERROR_STATUS: dict[type[ApplicationError], int] = {
    ApplicationError: 400,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Throttled: 429,
    Unavailable: 503,
}
# Errors of the pure packages, which import nothing of Refrain's and so cannot derive from a kind.
FOREIGN_KINDS: dict[type[Exception], type[ApplicationError]] = {TaxonomyFormatError: Invalid}


def error_kind(exc: Exception) -> type[ApplicationError] | None:
    """The kind in :data:`ERROR_STATUS` that ``exc`` is, or None for an error that is no kind."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return cls
        if cls in FOREIGN_KINDS:
            return FOREIGN_KINDS[cls]
    return None


def error_status(exc: Exception) -> int | None:
    """The HTTP status for an application error; None for any other error."""
    kind = error_kind(exc)
    return None if kind is None else ERROR_STATUS[kind]


def _error(request: HttpRequest, status: int, message: str, code: str) -> HttpResponse:
    return api.create_response(request, {"detail": message, "code": code}, status=status)


def error_retry_after(exc: Exception) -> int | None:
    """Seconds a client should wait before retrying, for the errors that say so."""
    if isinstance(exc, Throttled):
        return exc.retry_after
    return RETRY_AFTER_S if error_status(exc) == 503 else None


def _application_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    # Registered for ApplicationError and FOREIGN_KINDS only, so every exc here has a kind.
    kind = error_kind(exc) or ApplicationError
    code = exc.code if isinstance(exc, ApplicationError) else kind.code
    response = _error(request, ERROR_STATUS[kind], getattr(exc, "message", str(exc)), code)
    retry_after = error_retry_after(exc)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


_KINDS: tuple[type[Exception], ...] = (ApplicationError, *FOREIGN_KINDS)
for _kind in _KINDS:
    api.add_exception_handler(_kind, _application_error)  # type: ignore[arg-type]


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
