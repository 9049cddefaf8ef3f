"""Personal API tokens: list, create, revoke (API, page, admin), expiry, last use, scopes, and
revocation by a password change or a deactivation through any path."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from annotation.models import ApiToken
from annotation.services.tokens import TokenError, api_token_check, api_token_create

pytestmark = pytest.mark.django_db

LIST = "/api/v1/auth/tokens"


def _bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _session(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _api_ok(token: str) -> int:
    return Client().get("/api/v1/projects", **_bearer(token)).status_code


def test_session_user_creates_lists_and_revokes_tokens(team, settings):
    settings.REFRAIN_TOKEN_DEFAULT_DAYS = 90
    c = _session(team["ann"])
    made = c.post(LIST, {"name": "script"}, content_type="application/json")
    assert made.status_code == 201
    body = made.json()
    token = body["token"]
    assert token.startswith("rfn_") and body["prefix"] == token[:12]
    assert body["scopes"] == ["api"]
    expires = timezone.datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=89) < expires - timezone.now() <= timedelta(days=90)
    assert _api_ok(token) == 200

    listed = c.get(LIST).json()
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0] and token not in c.get(LIST).content.decode()
    assert listed[0]["last_used_at"] is not None  # the call above was recorded

    assert c.delete(f"{LIST}/{body['id']}").status_code == 204
    assert _api_ok(token) == 401
    row = ApiToken.objects.get(pk=body["id"])
    assert row.revoked_at is not None and row.revoked_reason == "revoked by owner"
    assert c.delete(f"{LIST}/{body['id']}").status_code == 204  # idempotent


def test_other_users_tokens_are_404_and_not_listed(team):
    theirs, their_token = api_token_create(user=team["ann2"], name="theirs")
    c = _session(team["ann"])
    assert c.delete(f"{LIST}/{theirs.pk}").status_code == 404
    assert c.get(LIST).json() == []
    assert _api_ok(their_token) == 200


def test_a_token_cannot_mint_tokens_without_the_tokens_scope(team):
    _, plain = api_token_create(user=team["ann"])
    c = Client()
    refused = c.post(LIST, {"name": "x"}, content_type="application/json", **_bearer(plain))
    assert refused.status_code == 403
    assert "tokens" in refused.json()["detail"]
    assert c.get(LIST, **_bearer(plain)).status_code == 403
    assert ApiToken.objects.filter(user=team["ann"]).count() == 1

    _, manager = api_token_create(user=team["ann"], scopes=["api", "tokens"])
    made = c.post(LIST, {"name": "child"}, content_type="application/json", **_bearer(manager))
    assert made.status_code == 201
    # A tokens-only token manages tokens but cannot use the rest of the API.
    _, tokens_only = api_token_create(user=team["ann"], scopes=["tokens"])
    assert c.get(LIST, **_bearer(tokens_only)).status_code == 200
    assert _api_ok(tokens_only) == 403


@pytest.mark.parametrize(
    "payload",
    [{"scopes": ["admin"]}, {"scopes": []}, {"expires_in_days": 0}, {"expires_in_days": 99999}],
)
def test_bad_token_requests_are_422(team, settings, payload):
    settings.REFRAIN_TOKEN_MAX_DAYS = 365
    c = _session(team["ann"])
    r = c.post(LIST, {"name": "x", **payload}, content_type="application/json")
    assert r.status_code == 422, r.content
    assert ApiToken.objects.count() == 0


def test_expired_tokens_are_refused(team):
    row, token = api_token_create(user=team["ann"], expires_in_days=1)
    assert _api_ok(token) == 200
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _api_ok(token) == 401
    assert api_token_check(token).reason == "expired"


def test_max_lifetime_setting_is_enforced(team, settings):
    settings.REFRAIN_TOKEN_MAX_DAYS = 30
    with pytest.raises(TokenError):
        api_token_create(user=team["ann"], expires_in_days=31)
    settings.REFRAIN_TOKEN_DEFAULT_DAYS = 0
    settings.REFRAIN_TOKEN_MAX_DAYS = 0
    row, _ = api_token_create(user=team["ann"])
    assert row.expires_at is None


def test_set_password_anywhere_revokes_tokens(team):
    user = team["ann"]
    row, token = api_token_create(user=user)
    assert _api_ok(token) == 200
    # Through the ORM, as any code path (a shell, a script, a management command) would.
    user.set_password("another-password-456")
    user.save()
    assert _api_ok(token) == 401
    row.refresh_from_db()
    assert row.revoked_at is not None and row.revoked_reason == "password changed"
    # Setting the old password back does not bring the token back.
    user.set_password("refrain-pass-123")
    user.save()
    assert _api_ok(token) == 401


def test_changepassword_command_revokes_tokens(team, monkeypatch):
    user = team["ann"]
    _, token = api_token_create(user=user)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a-brand-new-pass-789")
    call_command("changepassword", user.username, stdout=io.StringIO())
    assert _api_ok(token) == 401


def test_admin_password_change_and_deactivation_revoke_tokens(team):
    admin_user = get_user_model().objects.create_superuser("root", "root@x.org", "root-pass-123")
    admin = _session(admin_user)
    user = team["ann"]
    _, token = api_token_create(user=user)
    r = admin.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": "changed-by-admin-1", "password2": "changed-by-admin-1"},
    )
    assert r.status_code == 302, r.content[:500]
    assert _api_ok(token) == 401

    _, token2 = api_token_create(user=team["ann2"])
    assert _api_ok(token2) == 200
    get_user_model().objects.filter(pk=team["ann2"].pk).update(is_active=False)
    assert _api_ok(token2) == 401
    assert ApiToken.objects.get(user=team["ann2"]).revoked_reason == "user deactivated"
    # Reactivating does not revive a token revoked by the deactivation.
    get_user_model().objects.filter(pk=team["ann2"].pk).update(is_active=True)
    assert _api_ok(token2) == 401


def test_admin_lists_tokens_and_revokes_them_with_an_action(team):
    admin_user = get_user_model().objects.create_superuser("root", "root@x.org", "root-pass-123")
    admin = _session(admin_user)
    row, token = api_token_create(user=team["ann"], name="ci")
    page = admin.get("/admin/annotation/apitoken/")
    assert page.status_code == 200 and row.prefix in page.content.decode()
    assert token not in page.content.decode()
    r = admin.post(
        "/admin/annotation/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [row.pk]},
    )
    assert r.status_code == 302
    assert _api_ok(token) == 401


def test_token_page_lists_creates_once_and_revokes(team):
    c = _session(team["ann"])
    page = c.get("/account/tokens/")
    assert page.status_code == 200
    assert 'href="/account/tokens/"' in page.content.decode()  # linked from the nav
    made = c.post("/account/tokens/", {"name": "laptop", "expires_in_days": "7"})
    assert made.status_code == 200
    row = ApiToken.objects.get(user=team["ann"])
    html = made.content.decode()
    secret = html.split('class="token-secret">')[1].split("<")[0]
    assert secret.startswith(row.prefix) and _api_ok(secret) == 200
    assert timedelta(days=6) < row.expires_at - timezone.now() <= timedelta(days=7)
    # Shown once: the list afterwards shows the prefix only.
    again = c.get("/account/tokens/").content.decode()
    assert secret not in again and row.prefix in again

    theirs, _ = api_token_create(user=team["ann2"])
    assert c.post("/account/tokens/", {"revoke": theirs.pk}).status_code == 404
    assert c.post("/account/tokens/", {"revoke": "junk"}).status_code == 404
    assert c.post("/account/tokens/", {"revoke": row.pk}).status_code == 302
    assert _api_ok(secret) == 401
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_token_authentication_is_one_query_and_last_used_is_written_once_a_minute(
    team, django_assert_num_queries
):
    row, token = api_token_create(user=team["ann"])
    first = api_token_check(token)  # token + user, then the first last_used_at write
    assert first.token is not None
    with django_assert_num_queries(1):
        assert api_token_check(token).token is not None
    later = timezone.now() + timedelta(minutes=2)
    with django_assert_num_queries(2):  # a minute on: one conditional write
        assert api_token_check(token, now=later).token is not None
    row.refresh_from_db()
    assert row.last_used_at == later
    with django_assert_num_queries(1):
        assert api_token_check(token, now=later + timedelta(seconds=30)).token is not None


def test_a_token_request_costs_one_authentication_query(team, django_assert_num_queries):
    from annotation.services.enqueue import Manual, task_enqueue
    from tests.factories import ClipFactory

    project = team["project"]
    clips = [ClipFactory(project=project) for _ in range(3)]
    task_enqueue(project=project, sources=Manual.for_clips([c.pk for c in clips]))
    _, token = api_token_create(user=team["ann"])
    c = Client()
    url = f"/api/v1/projects/{project.pk}/tasks/next"
    c.post(url, **_bearer(token))  # takes a task, records the token's first use
    # As the session-pinned test in tests/annotation/test_api.py (8 queries for the held task),
    # with the token and its user in one query instead of the session's two.
    with django_assert_num_queries(7):
        assert c.post(url, **_bearer(token)).status_code == 200
