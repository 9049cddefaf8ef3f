"""The one NinjaAPI instance, served at ``/api/v1/``. Apps add their routers here.

Authentication: ``Authorization: Bearer <token>`` (personal API tokens) or the browser session
(with its CSRF token on writes). Typed service errors become 4xx answers with a ``detail`` message
and a machine-readable ``code``; bad input never reaches a 500.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
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

api = NinjaAPI(
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
