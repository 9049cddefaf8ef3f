"""API authentication: personal bearer tokens, each limited to its scopes.

``ApiTokenAuth(scope="api")`` guards the API as a whole; the token routes ask for ``"tokens"``, so a
token cannot mint or revoke tokens unless it was given that scope (session users always can).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from annotation import permissions as perm
from annotation.services.tokens import api_token_check


class ApiTokenAuth(HttpBearer):
    def __init__(self, *, scope: str = "api") -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = api_token_check(token).token
        if row is None:
            return None
        if self.scope not in row.scopes:
            raise perm.PermissionDenied(f"this token lacks the {self.scope!r} scope")
        request.user = row.user
        request.api_token = row  # type: ignore[attr-defined]
        return row.user
