"""Throttles on the shared cache: failed sign-ins (per username and per client address), failed
bearer-token authentication (per address) and token creation (per user).

Counters live in fixed windows keyed by the window's number, read as a sliding window (this one plus
the overlapping part of the previous one), so every process that shares the cache (Redis in
production, a file cache under VAR_DIR on the embedded default) counts together. When a
counter reaches its limit a lock is written that holds for one window; while it holds the action is
refused, even with the right password. Keys are hashed: usernames and addresses never appear in the
cache as written.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from refrain.errors import Throttled


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events per ``window_s`` seconds; reaching it locks for ``window_s``."""

    count: int
    window_s: int


def _now() -> float:
    return time.time()


def _key(kind: str, scope: str, subject: str) -> str:
    digest = hashlib.sha256(f"{scope}\x00{subject}".encode()).hexdigest()[:32]
    return f"refrain:throttle:{kind}:{scope}:{digest}"


def throttle_locked(*, scope: str, subject: str) -> int | None:
    """Seconds until ``subject``'s lock in ``scope`` lifts, or None when it is not locked."""
    until = cache.get(_key("lock", scope, subject))
    if until is None:
        return None
    left = float(until) - _now()
    return math.ceil(left) if left > 0 else None


def throttle_count(*, scope: str, subject: str, limit: Limit) -> float:
    """Count one event; lock ``subject`` for a window when the count reaches the limit.

    The count is the sliding-window estimate (this window's events plus the previous window's,
    weighted by how much of it still overlaps the last ``window_s`` seconds), so a burst across a
    window boundary is counted whole rather than split in two. Returns the estimate.
    """
    if limit.count <= 0:  # 0 turns the throttle off
        return 0.0
    now = _now()
    window = int(now // limit.window_s)
    key = _key(f"n{window}", scope, subject)
    ttl = int((window + 2) * limit.window_s - now) + 1  # read again as "previous" next window
    cache.add(key, 0, timeout=ttl)
    try:
        n = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=ttl)
        n = 1
    cache.touch(key, timeout=ttl)  # non-Redis backends reset the timeout on incr
    previous = int(cache.get(_key(f"n{window - 1}", scope, subject)) or 0)
    overlap = 1.0 - (now - window * limit.window_s) / limit.window_s
    estimate = n + previous * overlap
    if estimate >= limit.count:
        cache.set(_key("lock", scope, subject), now + limit.window_s, timeout=limit.window_s + 1)
    return estimate


def throttle_reset(*, scope: str, subject: str, limit: Limit) -> None:
    window = int(_now() // limit.window_s)
    cache.delete_many(
        [
            _key(f"n{window}", scope, subject),
            _key(f"n{window - 1}", scope, subject),
            _key("lock", scope, subject),
        ]
    )


# --- client address -------------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or, behind ``REFRAIN_TRUSTED_PROXIES`` proxies, the entry
    of X-Forwarded-For the outermost trusted proxy appended (entries left of it can be forged)."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    hops = settings.REFRAIN_TRUSTED_PROXIES
    if hops <= 0:
        return remote
    forwarded = [
        a.strip() for a in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if a.strip()
    ]
    if not forwarded:
        return remote
    return forwarded[-hops] if len(forwarded) >= hops else forwarded[0]


# --- the throttles --------------------------------------------------------------------------------


def _login_limits() -> tuple[Limit, Limit]:
    window = settings.REFRAIN_LOGIN_WINDOW_SECONDS
    return (
        Limit(settings.REFRAIN_LOGIN_MAX_FAILURES_PER_USERNAME, window),
        Limit(settings.REFRAIN_LOGIN_MAX_FAILURES_PER_ADDRESS, window),
    )


def _username_subject(username: str) -> str:
    return username.strip().casefold()


def login_locked(*, username: str, address: str) -> int | None:
    """Seconds until sign-in for this username or from this address is allowed again, or None."""
    waits = [
        throttle_locked(scope="login-user", subject=_username_subject(username)),
        throttle_locked(scope="login-addr", subject=address),
    ]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


def login_failed(*, username: str, address: str) -> None:
    per_user, per_addr = _login_limits()
    throttle_count(scope="login-user", subject=_username_subject(username), limit=per_user)
    throttle_count(scope="login-addr", subject=address, limit=per_addr)


def login_succeeded(*, username: str) -> None:
    # The username's count restarts; the address's does not (signing in to one's own account must
    # not reset an address that is guessing at others).
    per_user, _ = _login_limits()
    throttle_reset(scope="login-user", subject=_username_subject(username), limit=per_user)


def token_auth_failed(*, address: str) -> None:
    """Record a failed bearer-token authentication; raises Throttled when the address is locked."""
    wait = throttle_locked(scope="token-auth", subject=address)
    if wait is None:
        limit = Limit(
            settings.REFRAIN_TOKEN_AUTH_MAX_FAILURES, settings.REFRAIN_TOKEN_AUTH_WINDOW_SECONDS
        )
        throttle_count(scope="token-auth", subject=address, limit=limit)
        wait = throttle_locked(scope="token-auth", subject=address)
    if wait is not None:
        raise Throttled(retry_after=wait, what="failed token authentications from this address")


def token_creation_count(*, user_id: int) -> None:
    """Count one token creation by ``user_id``; raises Throttled when over the limit."""
    wait = throttle_locked(scope="token-create", subject=str(user_id))
    if wait is not None:
        raise Throttled(retry_after=wait, what="tokens created")
    # The creation that reaches the limit goes through; the lock refuses the ones after it.
    limit = Limit(settings.REFRAIN_TOKEN_CREATE_MAX, settings.REFRAIN_TOKEN_CREATE_WINDOW_SECONDS)
    throttle_count(scope="token-create", subject=str(user_id), limit=limit)
