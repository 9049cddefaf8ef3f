"""Error answers outside the API's own handlers (issue 12).

- Under ``/api/``, every 4xx/5xx is JSON ``{"detail", "code"}``: Django's own answers (an unknown
  route's 404, a wrong method's 405, a 500 raised outside the view) are rewritten here; the API's
  handlers in ``refrain/api.py`` cover what happens inside an operation.
- A page view may let an application error (``refrain.errors``) through: it is answered with the
  status the API gives it (one table, ``refrain.api.ERROR_STATUS``), not found as Django's 404 page.
- A database or broker that is unavailable is a 503 with ``Retry-After`` (JSON for the API, a short
  HTML page for pages), also when it fails at commit time (``ATOMIC_REQUESTS``, ``on_commit``).
- Before an API operation runs: a JSON body must be an object, and no string anywhere in the query
  or a JSON body may hold a NUL character (PostgreSQL cannot store one): both are 422. Forms are
  left to the operation (reading them here would consume the upload stream); the one form field,
  an upload's ``priority``, is a number.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from html import escape
from typing import Any

from django.db import InterfaceError
from django.db import OperationalError as DatabaseUnavailable
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("refrain.errors")

RETRY_AFTER_S = 30
API_PREFIX = "/api/"

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "throttled",
    500: "server_error",
    503: "unavailable",
}


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "a service we depend on is down", not "this request is wrong"."""
    errors: list[type[BaseException]] = [DatabaseUnavailable, InterfaceError]
    try:
        from kombu.exceptions import OperationalError as BrokerUnavailable

        errors.append(BrokerUnavailable)
    except ImportError:  # pragma: no cover - kombu ships with celery
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # pragma: no cover - only with the redis transport
        pass
    return tuple(errors)


UNAVAILABLE = _unavailable_errors()


def error_code(status: int) -> str:
    return _CODES.get(status, "client_error" if status < 500 else "server_error")


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def unavailable_detail(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, (DatabaseUnavailable, InterfaceError)):
        return "the database is unavailable; retry shortly", "database_unavailable"
    return "the task queue is unavailable; retry shortly", "broker_unavailable"


def api_error(status: int, detail: str, code: str | None = None, **extra: Any) -> JsonResponse:
    return JsonResponse(
        {"detail": detail, "code": code or error_code(status), **extra}, status=status
    )


def service_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    detail, code = unavailable_detail(exc)
    logger.warning("%s %s: %s (%s)", request.method, request.path, code, exc)
    if is_api(request):
        response: HttpResponse = api_error(503, detail, code)
    else:
        response = HttpResponse(
            "<!doctype html><title>Temporarily unavailable</title>"
            f"<h1>Temporarily unavailable</h1><p>{escape(detail.capitalize())}.</p>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _strings(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield loc, str(key)
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))


def _invalid(loc: tuple[Any, ...], msg: str, kind: str) -> JsonResponse:
    where = ".".join(str(p) for p in loc)
    return api_error(
        422,
        f"{where}: {msg}",
        "validation_error",
        errors=[{"loc": list(loc), "msg": msg, "type": kind}],
    )


def api_input_problem(request: HttpRequest) -> JsonResponse | None:
    """A 422 for input no operation may accept (checked before the operation parses it)."""
    nul = "NUL characters are not allowed"
    for key in request.GET:
        for loc, text in _strings({key: request.GET.getlist(key)}, ("query",)):
            if "\x00" in text:
                return _invalid(loc, nul, "string_nul")
    content_type = request.content_type or ""
    # The API reads any other body as JSON whatever its declared type, so check it the same way.
    form = content_type.startswith(("multipart/", "application/x-www-form-urlencoded"))
    if not form and request.body:
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            return None  # the API answers malformed JSON itself (400)
        if not isinstance(body, dict):
            return _invalid(("body",), "the body must be a JSON object", "model_type")
        try:
            for loc, text in _strings(body, ("body",)):
                if "\x00" in text:
                    return _invalid(loc, nul, "string_nul")
        except RecursionError:
            return _invalid(("body",), "the body is nested too deeply", "too_deep")
    return None


def page_error(request: HttpRequest, exc: Exception) -> HttpResponse | None:
    """A page's answer to an application error a view let through, with the API's status for it
    (``refrain.api.ERROR_STATUS``); None (Django's 500) for any other error.

    Not found is Django's 404 page, as for ``Http404``; other kinds are their message.
    """
    # The table lives with the API, which imports this module: import it when a page needs it.
    from refrain.api import error_retry_after, error_status

    status = error_status(exc)
    if status is None:
        return None
    message = getattr(exc, "message", str(exc))
    if status == 404:
        raise Http404(message) from exc
    response = HttpResponse(escape(message), status=status)
    retry_after = error_retry_after(exc)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


class ErrorResponsesMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            is_api(request)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            # Django's own answers under /api/: unknown route, wrong method, an error outside the view.
            status = response.status_code
            detail = {
                404: f"no API route {request.path}",
                405: f"{request.method} is not allowed on {request.path}",
            }.get(status, response.reason_phrase)
            rewritten = api_error(status, detail)
            for header in ("Allow", "Retry-After"):
                if header in response:
                    rewritten[header] = response[header]
            return rewritten
        return response

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        return api_input_problem(request) if is_api(request) else None

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, UNAVAILABLE):
            return service_unavailable(request, exc)
        if not is_api(request):
            return page_error(request, exc)
        logger.exception("%s %s failed", request.method, request.path, exc_info=exc)
        return api_error(500, "internal error; it has been logged", "server_error")
