"""Personal API tokens: shown once, stored as a SHA-256 digest, scoped, expiring, revocable.

A token stops working when it is revoked, when it expires, when its owner is deactivated, and when its
owner's password changes by any path (the admin, ``changepassword``, ``set_password`` anywhere): the
token carries a fingerprint of the password hash it was made under, compared at each authentication.
Authentication is one query (token joined with its user); ``last_used_at`` is written at most once a
minute per token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from annotation.models import ApiToken
from annotation.services.throttle import token_creation_count
from refrain.errors import Invalid

TOKEN_PREFIX = "rfn_"
SCOPES = frozenset(ApiToken.Scope.values)
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(Invalid):
    """A token request that cannot be honoured (bad scope or lifetime); the message says why."""


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of checking a presented token: the row when it is valid, else why not."""

    token: ApiToken | None
    reason: str = ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def password_fingerprint(*, password_hash: str) -> str:
    # The stored hash is already salted; hashing it again keeps it out of the token table.
    return hashlib.sha256(f"refrain-token:{password_hash}".encode()).hexdigest()


def api_token_create(
    *,
    user: AbstractBaseUser,
    name: str = "",
    scopes: Iterable[str] = ("api",),
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the token itself (not stored anywhere).

    ``expires_in_days`` None takes ``REFRAIN_TOKEN_DEFAULT_DAYS`` (0 there: no expiry); at most
    ``REFRAIN_TOKEN_MAX_DAYS`` (0 there: no limit).
    """
    wanted = sorted(set(scopes))
    unknown = set(wanted) - SCOPES
    if not wanted or unknown:
        raise TokenError(
            f"scopes must be a non-empty subset of {sorted(SCOPES)}"
            + (f"; unknown: {sorted(unknown)}" if unknown else "")
        )
    days = settings.REFRAIN_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    max_days = settings.REFRAIN_TOKEN_MAX_DAYS
    if days < 0 or (max_days and (days == 0 or days > max_days)):
        raise TokenError(f"expires_in_days must be between 1 and {max_days or 'unlimited'}")
    if "\x00" in name:
        raise TokenError("name must not contain NUL characters")
    token_creation_count(user_id=user.pk)  # raises Throttled past REFRAIN_TOKEN_CREATE_MAX
    now = timezone.now()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user,
        name=name[:100],
        digest=_digest(token),
        prefix=token[:12],
        scopes=wanted,
        password_fingerprint=password_fingerprint(password_hash=user.password),
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )
    return row, token


def api_token_check(token: str, *, now: datetime | None = None) -> TokenCheck:
    """Whether ``token`` may authenticate now; one query, plus a write only when something changes.

    A password change or a deactivation found here revokes the token for good (with the reason),
    so it stays dead even if the password is set back.
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return TokenCheck(None, "malformed")
    row = (
        ApiToken.objects.select_related("user")
        .filter(digest=_digest(token), revoked_at__isnull=True)
        .first()
    )
    if row is None:
        return TokenCheck(None, "unknown or revoked")
    now = now or timezone.now()
    if not row.user.is_active:
        api_token_revoke(token_row=row, reason="user deactivated")
        return TokenCheck(None, "user deactivated")
    if row.password_fingerprint != password_fingerprint(password_hash=row.user.password):
        api_token_revoke(token_row=row, reason="password changed")
        return TokenCheck(None, "password changed")
    if row.expires_at is not None and row.expires_at <= now:
        return TokenCheck(None, "expired")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so concurrent requests in the same minute write once between them.
        ApiToken.objects.filter(pk=row.pk).exclude(
            last_used_at__gt=now - LAST_USED_RESOLUTION
        ).update(last_used_at=now)
        row.last_used_at = now
    return TokenCheck(row)


def api_token_user(token: str) -> AbstractBaseUser | None:
    """The active user a token belongs to, or None (one query on the hot path)."""
    row = api_token_check(token).token
    return row.user if row else None


def api_token_revoke(*, token_row: ApiToken, reason: str = "revoked") -> bool:
    """Revoke one token; False when it was already revoked."""
    return bool(
        ApiToken.objects.filter(pk=token_row.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason[:40]
        )
    )


def api_tokens_revoke_for_user(*, user: AbstractBaseUser, reason: str) -> int:
    """Revoke every live token of ``user`` (deactivation, a suspected leak); returns how many."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason[:40]
    )


def api_tokens_of(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's tokens, newest first (revoked ones too, so the history stays visible)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")
