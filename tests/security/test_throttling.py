"""Throttles on the shared cache: sign-in per username and address (the page and the admin), failed
bearer tokens per address, token creation per user; the client address behind trusted proxies."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from annotation.services import throttle
from annotation.services.tokens import api_token_create

pytestmark = pytest.mark.django_db

PASSWORD = "refrain-pass-123"  # tests.factories.UserFactory's
REDIS_URL = "redis://127.0.0.1:6379/10"


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(params=["locmem"])
def shared_cache(request, settings, tmp_path: Path, monkeypatch) -> str:
    """A fresh cache per test (a unique key prefix on Redis: never flush the shared server)."""
    prefix = f"t-{uuid.uuid4().hex}"
    if request.param == "redis":
        if not _redis_up():
            pytest.skip(f"no Redis at {REDIS_URL}")
        backend = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    elif request.param == "file":
        backend = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    else:
        backend = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": prefix}
    settings.CACHES = {"default": backend}
    # The throttle's clock runs from just after a window boundary, so a test's attempts never
    # straddle one (the sliding estimate would then weigh the older attempts a little less).
    t0, window = time.time(), 15 * 60
    start = (t0 // window) * window + 1
    monkeypatch.setattr(throttle, "_now", lambda: start + (time.time() - t0))
    settings.REFRAIN_LOGIN_MAX_FAILURES_PER_USERNAME = 10
    settings.REFRAIN_LOGIN_MAX_FAILURES_PER_ADDRESS = 30
    settings.REFRAIN_LOGIN_WINDOW_SECONDS = 15 * 60
    settings.REFRAIN_TRUSTED_PROXIES = 0
    return request.param


def _login(username: str, password: str, *, address: str) -> tuple[int, Client, object]:
    c = Client(REMOTE_ADDR=address)
    r = c.post("/login/", {"username": username, "password": password})
    return r.status_code, c, r


def _signed_in(c: Client) -> bool:
    return "_auth_user_id" in c.session


@pytest.mark.parametrize("shared_cache", ["redis", "file", "locmem"], indirect=True)
def test_forty_wrong_passwords_then_the_right_one_is_refused_while_locked(team, shared_cache):
    statuses = [_login("ann", "wrong", address="10.0.0.1")[0] for _ in range(40)]
    assert statuses[:10] == [200] * 10  # the form again, "enter a correct username and password"
    assert set(statuses[10:]) == {429}
    status, c, r = _login("ann", PASSWORD, address="10.0.0.1")
    assert status == 429 and not _signed_in(c)
    assert 0 < int(r["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts. Try again in 15 minutes." in r.content.decode()
    # Per username: the same account from another address is locked too.
    status, c, _ = _login("ann", PASSWORD, address="10.0.0.2")
    assert status == 429 and not _signed_in(c)
    # Another account from another address is not affected, nor from the same address (only 10
    # failures were counted there: attempts refused while locked are not checked at all).
    for address in ("10.0.0.2", "10.0.0.1"):
        status, c, _ = _login("ann2", PASSWORD, address=address)
        assert status == 302 and _signed_in(c)


def test_one_address_spraying_many_usernames_is_locked(team, shared_cache, settings):
    settings.REFRAIN_LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    for i in range(5):
        assert _login(f"nobody{i}", "wrong", address="10.0.0.9")[0] == 200
    status, c, _ = _login("ann", PASSWORD, address="10.0.0.9")
    assert status == 429 and not _signed_in(c)
    status, c, _ = _login("ann", PASSWORD, address="10.0.0.10")
    assert status == 302 and _signed_in(c)


def test_the_lock_expires_after_the_window(team, shared_cache, monkeypatch):
    real_now = throttle._now
    for _ in range(10):
        _login("ann", "wrong", address="10.0.0.1")
    assert _login("ann", PASSWORD, address="10.0.0.1")[0] == 429
    monkeypatch.setattr(throttle, "_now", lambda: real_now() + 15 * 60 + 1)
    status, c, _ = _login("ann", PASSWORD, address="10.0.0.1")
    assert status == 302 and _signed_in(c)


def test_a_successful_sign_in_restarts_the_username_count(team, shared_cache):
    for _ in range(9):
        _login("ann", "wrong", address="10.0.0.1")
    assert _login("ann", PASSWORD, address="10.0.0.1")[0] == 302
    for _ in range(9):
        assert _login("ann", "wrong", address="10.0.0.1")[0] == 200
    assert _login("ann", PASSWORD, address="10.0.0.1")[0] == 302


def test_the_admin_sign_in_shares_the_lock(team, shared_cache):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", "root@x.org", "root-pass-123")
    for _ in range(10):
        _login("root", "wrong", address="10.0.0.1")
    c = Client(REMOTE_ADDR="10.0.0.3")
    c.post("/admin/login/", {"username": "root", "password": "root-pass-123", "next": "/admin/"})
    assert not _signed_in(c)


def test_failed_bearer_tokens_are_throttled_per_address(team, shared_cache, settings):
    settings.REFRAIN_TOKEN_AUTH_MAX_FAILURES = 5
    _, good = api_token_create(user=team["ann"])
    bad = Client(REMOTE_ADDR="10.0.0.5")
    codes = [
        bad.get("/api/v1/projects", HTTP_AUTHORIZATION=f"Bearer rfn_guess{i}").status_code
        for i in range(8)
    ]
    assert codes[:4] == [401] * 4 and set(codes[5:]) == {429}
    r = bad.get("/api/v1/projects", HTTP_AUTHORIZATION="Bearer rfn_guess")
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert r.json()["code"] == "throttled" and "Try again in" in r.json()["detail"]
    # A valid token is never throttled (it does not touch the counters); other addresses get 401.
    assert bad.get("/api/v1/projects", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    other = Client(REMOTE_ADDR="10.0.0.6")
    assert other.get("/api/v1/projects", HTTP_AUTHORIZATION="Bearer rfn_x").status_code == 401


def test_token_creation_is_throttled_per_user(team, shared_cache, settings):
    settings.REFRAIN_TOKEN_CREATE_MAX = 3
    c = Client()
    c.force_login(team["ann"])
    codes = [
        c.post("/api/v1/auth/tokens", {"name": f"t{i}"}, content_type="application/json")
        for i in range(4)
    ]
    assert [r.status_code for r in codes] == [201, 201, 201, 429]
    assert codes[-1].has_header("Retry-After")
    page = c.post("/account/tokens/", {"name": "more"})
    assert page.status_code == 429 and "Too many tokens created" in page.content.decode()
    other = Client()
    other.force_login(team["ann2"])
    made = other.post("/api/v1/auth/tokens", {"name": "x"}, content_type="application/json")
    assert made.status_code == 201


@pytest.mark.parametrize(
    ("proxies", "xff", "expected"),
    [
        (0, "1.1.1.1", "10.0.0.1"),  # no trusted proxy: X-Forwarded-For is ignored
        (1, "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # the client forged the left entry
        (2, "6.6.6.6, 1.1.1.1, 172.16.0.2", "1.1.1.1"),
        (1, "", "10.0.0.1"),
    ],
)
def test_client_address_trusts_only_the_configured_proxies(settings, proxies, xff, expected):
    settings.REFRAIN_TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=xff)
    assert throttle.client_address(request) == expected


def test_a_burst_across_a_window_boundary_is_counted_whole(team, shared_cache, monkeypatch):
    clock = [10_000 * 900 + 890.0]  # ten seconds before a boundary
    monkeypatch.setattr(throttle, "_now", lambda: clock[0])
    for _ in range(9):
        _login("ann", "wrong", address="10.0.0.1")
    clock[0] += 15  # five seconds into the next window: fixed windows would start again at 0
    for _ in range(2):  # 9 x (1 - 5/900) + 2 >= 10
        assert _login("ann", "wrong", address="10.0.0.1")[0] == 200
    status, c, _ = _login("ann", PASSWORD, address="10.0.0.1")
    assert status == 429 and not _signed_in(c)
