"""Authentication: personal bearer tokens for the API, and throttled password sign-in.

``ApiTokenAuth(scope="api")`` guards the API as a whole; the token routes ask for ``"tokens"``, so a
token cannot mint or revoke tokens unless it was given that scope (session users always can). Failed
bearer authentications are counted per client address (valid tokens never touch the cache).

``ThrottledModelBackend`` counts failed sign-ins per username and per address and refuses every
attempt, right password included, while either is locked: the sign-in page, the admin's and any
other form that calls ``authenticate(request, ...)`` go through it. ``ThrottledLoginView`` answers a
locked attempt with 429, ``Retry-After`` and a message saying when to try again.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest, HttpResponse
from ninja.security import HttpBearer

from annotation.services import throttle
from annotation.services.tokens import api_token_check
from refrain.errors import PermissionDenied, Throttled


class ApiTokenAuth(HttpBearer):
    def __init__(self, *, scope: str = "api") -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = api_token_check(token).token
        if row is None:
            throttle.token_auth_failed(address=throttle.client_address(request))
            return None
        if self.scope not in row.scopes:
            raise PermissionDenied(f"this token lacks the {self.scope!r} scope")
        request.user = row.user
        request.api_token = row  # type: ignore[attr-defined]
        return row.user


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is None or username is None:  # no client to throttle (tests, scripts)
            return super().authenticate(request, username=username, password=password, **kwargs)
        address = throttle.client_address(request)
        wait = throttle.login_locked(username=username, address=address)
        if wait is not None:
            request.login_retry_after = wait  # type: ignore[attr-defined]
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            throttle.login_failed(username=username, address=address)
        else:
            throttle.login_succeeded(username=username)
        return user


class ThrottledLoginView(auth_views.LoginView):
    template_name = "login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        address = throttle.client_address(request)
        wait = throttle.login_locked(username=username, address=address) if username else None
        if wait is None:
            return super().post(request, *args, **kwargs)
        message = Throttled(retry_after=wait, what="failed sign-in attempts").message
        # An unbound form: nothing is validated, so the password is not even checked.
        form = self.get_form_class()(request=request, initial={"username": username})
        response = self.render_to_response(
            self.get_context_data(form=form, throttled_message=message), status=429
        )
        response["Retry-After"] = str(wait)
        return response
