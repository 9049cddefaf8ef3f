"""Authorization matrix: every API route and every page route × every kind of caller.

The table below is written by hand from the code (``annotation.permissions``, the views'
``project_role`` decorators, the API's ``perm.require_role`` calls), not derived from responses.
Callers: anonymous, an annotator of *another* project ("other"), a staff user who is no member
("staff"), and the project's annotator, reviewer and admin. Expected, per scope:

- ``project`` (min role R): anonymous → 401 (API) / redirect to login (pages); other and staff →
  404 (the project's existence is not revealed); members below R → 403; R and above → allowed.
- ``version``: a taxonomy version is visible to members of a project that uses it and to staff.
- ``user``: any signed-in caller; ``staff``: staff only (403 for the others); ``public``: anyone.
- ``owner``: a row that belongs to one caller (``role`` names which: a token of the admin, a
  taxonomy import the staff user started): the owner may, every other signed-in caller gets 404.
- ``secret``: authenticated by a signed link or a webhook secret, not by the caller: without it
  every caller, admin included, gets the same refusal.

"Allowed" means the route's own answer: 2xx/3xx, or a 4xx for the input (409 not held, 422), but
never 401, 403, 404 or 5xx. A route missing from the table, or a table row with no route, fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from refrain.api import api

pytestmark = pytest.mark.django_db

CALLERS = ("anonymous", "other", "staff", "annotator", "reviewer", "admin")
RANK = {"annotator": 1, "reviewer": 2, "admin": 3}


@dataclass(frozen=True)
class Rule:
    scope: str  # project | version | user | staff | owner | public | secret
    role: str | None = None  # minimum project role, for scope "project"
    refusal: int | None = None  # for scope "secret": what every caller gets without the secret


def project(role: str) -> Rule:
    return Rule("project", role)


# --- the table: API operations ("METHOD /api/v1/path") -----------------------------------------

API_TABLE: dict[str, Rule] = {
    "GET /api/v1/projects": Rule("user"),
    "POST /api/v1/projects": Rule("staff"),
    "GET /api/v1/projects/{project_id}": project("annotator"),
    "PATCH /api/v1/projects/{project_id}": project("admin"),
    "GET /api/v1/projects/{project_id}/members": project("admin"),
    "POST /api/v1/projects/{project_id}/members": project("admin"),
    "GET /api/v1/taxonomies": Rule("user"),
    "GET /api/v1/taxonomies/versions/{version_id}": Rule("version"),
    "GET /api/v1/taxonomies/versions/{version_id}/nodes": Rule("version"),
    "GET /api/v1/projects/{project_id}/clips": project("reviewer"),
    "POST /api/v1/projects/{project_id}/clips": project("admin"),
    # Clips: reviewers see any clip of the project, annotators the clips of tasks they held
    # (the annotator here holds the clip's task).
    "GET /api/v1/clips/{clip_id}": project("annotator"),
    "GET /api/v1/clips/{clip_id}/visual": project("annotator"),
    "POST /api/v1/projects/{project_id}/tasks/next": project("annotator"),
    # Task routes act on the caller's own assignment: other members get 409 (not held).
    "POST /api/v1/tasks/{task_id}/lease": project("annotator"),
    "POST /api/v1/tasks/{task_id}/skip": project("annotator"),
    "POST /api/v1/tasks/{task_id}/annotations": project("annotator"),
    "GET /api/v1/projects/{project_id}/tasks": project("reviewer"),
    "POST /api/v1/projects/{project_id}/tasks": project("admin"),
    # Annotators list only their own annotations; the annotation here is the annotator's.
    "GET /api/v1/projects/{project_id}/annotations": project("annotator"),
    "GET /api/v1/annotations/{annotation_id}": project("annotator"),
    "GET /api/v1/clips/{clip_id}/annotations": project("reviewer"),
    "GET /api/v1/clips/{clip_id}/reviews": project("reviewer"),
    "POST /api/v1/clips/{clip_id}/reviews": project("reviewer"),
    "POST /api/v1/auth/tokens": Rule("user"),
    "GET /api/v1/auth/tokens": Rule("user"),
    "DELETE /api/v1/auth/tokens/{token_id}": Rule("owner", "admin"),
    "POST /api/v1/taxonomies/import": Rule("staff"),
    "GET /api/v1/taxonomies/imports/{job_id}": Rule("owner", "staff"),
    "GET /api/v1/projects/{project_id}/models": project("reviewer"),
    "POST /api/v1/projects/{project_id}/models": project("admin"),
    "GET /api/v1/projects/{project_id}/issues": project("reviewer"),
    "GET /api/v1/projects/{project_id}/clips/explore": project("reviewer"),
    "GET /api/v1/projects/{project_id}/export": project("reviewer"),
    "GET /api/v1/projects/{project_id}/cycles": project("reviewer"),
    "POST /api/v1/projects/{project_id}/cycles": project("admin"),
    "GET /api/v1/cycles/{cycle_id}": project("reviewer"),
    "GET /api/v1/projects/{project_id}/jobs": project("reviewer"),
}

# --- the table: pages ("METHOD route pattern", Django's admin excluded) -------------------------

PAGE_TABLE: dict[str, Rule] = {
    "GET login/": Rule("public"),
    # Health (refrain/health.py): statuses and latencies only, no secrets.
    "GET healthz": Rule("public"),
    "GET livez": Rule("public"),
    "POST logout/": Rule("public"),
    "GET ": Rule("user"),
    "GET projects/new/": Rule("staff"),
    "GET taxonomies/import/": Rule("staff"),
    "GET taxonomies/imports/<int:job_id>/": Rule("owner", "staff"),
    "GET account/tokens/": Rule("user"),
    "GET p/<slug:slug>/annotate/": project("annotator"),
    "GET p/<slug:slug>/review/": project("reviewer"),
    "POST p/<slug:slug>/review/next/": project("reviewer"),
    "GET p/<slug:slug>/review/<int:clip_id>/": project("reviewer"),
    "GET p/<slug:slug>/settings/": project("admin"),
    "GET p/<slug:slug>/members/": project("admin"),
    "GET p/<slug:slug>/clips/": project("admin"),
    "GET p/<slug:slug>/queue/": project("admin"),
    "GET clips/<int:clip_id>/audio": project("annotator"),
    "GET clips/<int:clip_id>/spectrogram.png": project("annotator"),
    "GET p/<slug:slug>/models/": project("reviewer"),
    "GET p/<slug:slug>/quality/": project("reviewer"),
    "GET p/<slug:slug>/jobs/": project("reviewer"),
    "GET p/<slug:slug>/jobs/rows/": project("reviewer"),
    # The world's cycle is queued: the admin's retry is a 409 (not failed), its cancel a 202.
    "POST p/<slug:slug>/jobs/<str:kind>/<int:job_pk>/retry/": project("admin"),
    "POST p/<slug:slug>/jobs/<str:kind>/<int:job_pk>/cancel/": project("admin"),
    "GET p/<slug:slug>/quality/issues/": project("reviewer"),
    "POST p/<slug:slug>/quality/cycle/": project("admin"),
    "GET p/<slug:slug>/quality/export/": project("reviewer"),
    "GET p/<slug:slug>/settings/loop/": project("admin"),
    "GET p/<slug:slug>/quality/clips/<int:clip_id>/": project("reviewer"),
    # The console's dashboards (quality/dashboards): reviewers read, admins ask for a recompute.
    "GET p/<slug:slug>/dashboards/": project("reviewer"),
    "GET p/<slug:slug>/dashboards/taxonomy/": project("reviewer"),
    "GET p/<slug:slug>/dashboards/annotators/": project("reviewer"),
    "GET p/<slug:slug>/dashboards/issues/": project("reviewer"),
    "GET p/<slug:slug>/dashboards/models/": project("reviewer"),
    "GET p/<slug:slug>/dashboards/learning/": project("reviewer"),
    "POST p/<slug:slug>/dashboards/refresh/": project("admin"),
    "GET p/<slug:slug>/explore/": project("reviewer"),
    # No body: a reviewer's answer is a 400 (no action named), below them a refusal.
    "POST p/<slug:slug>/explore/action/": project("reviewer"),
    "GET p/<slug:slug>/settings/labelstudio/": project("admin"),
    "POST p/<slug:slug>/settings/labelstudio/": project("admin"),
    "POST integrations/label-studio/<int:link_id>/webhook": Rule("secret", refusal=403),
    "GET integrations/label-studio/audio/<str:token>": Rule("secret", refusal=404),
    # Refrain as Label Studio's ML backend: the link's basic-auth password, whoever is signed in.
    "GET integrations/label-studio/<int:link_id>/ml/health": Rule("secret", refusal=401),
    "POST integrations/label-studio/<int:link_id>/ml/setup": Rule("secret", refusal=401),
    "POST integrations/label-studio/<int:link_id>/ml/predict": Rule("secret", refusal=401),
    "POST integrations/label-studio/<int:link_id>/ml/webhook": Rule("secret", refusal=401),
    "POST integrations/label-studio/<int:link_id>/ml/train": Rule("secret", refusal=401),
}

# Bodies that pass each write's schema, so the answer is about who asks, not what was sent.
BODIES: dict[str, Any] = {
    "POST /api/v1/projects": {"name": "Matrix", "taxonomy_version_id": "{version_id}"},
    "PATCH /api/v1/projects/{project_id}": {},
    "POST /api/v1/projects/{project_id}/members": {"user": "ann3", "role": "reviewer"},
    "POST /api/v1/tasks/{task_id}/annotations": {"labels": ["Rock"]},
    "POST /api/v1/projects/{project_id}/tasks": {"clip_ids": ["{clip_id}"]},
    "POST /api/v1/clips/{clip_id}/reviews": {"decision": "accept"},
    "POST /api/v1/auth/tokens": {"name": "matrix"},
    "POST /api/v1/projects/{project_id}/models": {},
}


def api_routes() -> set[str]:
    schema = api.get_openapi_schema()
    return {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops}


def _patterns(resolver: URLResolver, prefix: str = "") -> list[str]:
    out: list[str] = []
    for p in resolver.url_patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            if route.startswith(("admin/", "api/")):
                continue  # Django's admin (staff only, its own login); the API is above
            out += _patterns(p, route)
        elif isinstance(p, URLPattern):
            out.append(route)
    return out


def page_routes() -> set[str]:
    return set(_patterns(get_resolver()))


def test_every_route_is_in_the_table() -> None:
    api_missing = api_routes() - set(API_TABLE)
    pages = {key.split(" ", 1)[1] for key in PAGE_TABLE}
    pages_missing = page_routes() - pages
    assert not api_missing, f"classify these API routes in API_TABLE: {sorted(api_missing)}"
    assert not pages_missing, f"classify these page routes in PAGE_TABLE: {sorted(pages_missing)}"
    assert not set(API_TABLE) - api_routes(), "API_TABLE names routes that no longer exist"
    assert not pages - page_routes(), "PAGE_TABLE names routes that no longer exist"


def expected(rule: Rule, caller: str, *, is_api: bool) -> str:
    """``ok``, ``login`` (redirect), or a status code as text."""
    if rule.scope == "public":
        return "ok"
    if rule.scope == "secret":
        return str(rule.refusal)
    if caller == "anonymous":
        return "401" if is_api else "login"
    if rule.scope == "user":
        return "ok"
    if rule.scope == "staff":
        return "ok" if caller == "staff" else "403"
    if rule.scope == "owner":
        return "ok" if caller == rule.role else "404"
    if rule.scope == "version":
        return "404" if caller == "other" else "ok"
    assert rule.scope == "project" and rule.role in RANK
    if caller in ("other", "staff"):
        return "404"
    return "ok" if RANK[caller] >= RANK[rule.role] else "403"


def outcome(response: Any, *, is_api: bool) -> str:
    status = response.status_code
    if status in (401, 403, 404) or status >= 500:
        return str(status)
    if not is_api and status == 302 and "/login/?next=" in response.get("Location", ""):
        return "login"
    return "ok"


@pytest.fixture
def world(team, tmp_path: Path, settings: Any) -> dict[str, Any]:
    from annotation.models import Assignment, Membership, TaxonomyImportJob
    from annotation.selectors import taxonomy_index_cached
    from annotation.services.annotations import annotation_create
    from annotation.services.enqueue import Manual, task_enqueue
    from annotation.services.tasks import task_next_for_annotator
    from annotation.services.tokens import api_token_create
    from quality.models import QualityCycle
    from tests.factories import (
        ClipFactory,
        MembershipFactory,
        ProjectFactory,
        UserFactory,
        write_tone,
    )

    settings.MEDIA_ROOT = tmp_path / "media"
    proj = team["project"]
    audio = write_tone(tmp_path / "media" / "clips" / "matrix.wav")
    clip = ClipFactory(project=proj, storage_key=str(audio))
    task_enqueue(project=proj, sources=Manual.for_clips([clip.pk]))
    held = task_next_for_annotator(project_id=proj.pk, user=team["ann"], exclude_task_ids=[])
    assert isinstance(held, Assignment) and held.task.clip_id == clip.pk
    index = taxonomy_index_cached(proj.taxonomy_version)
    annotation, *_ = annotation_create(
        clip=clip,
        index=index,
        explicit_node_ids=[index.nodes[0].id],
        source="user:ann",
        user=team["ann"],
    )
    cycle = QualityCycle.objects.create(project=proj, trigger="manual")
    staffer = UserFactory(username="staffer", is_staff=True)
    token_row, _secret = api_token_create(user=team["admin"], name="matrix")
    job = TaxonomyImportJob.objects.create(name="Matrix genres", data=b"", created_by=staffer)
    other_project = ProjectFactory()
    MembershipFactory(project=other_project, user=team["outsider"], role=Membership.Role.ANNOTATOR)
    users = {
        "other": team["outsider"],
        "staff": staffer,
        "annotator": team["ann"],
        "reviewer": team["reviewer"],
        "admin": team["admin"],
    }
    ids = {
        "project_id": proj.pk,
        "version_id": proj.taxonomy_version_id,
        "clip_id": clip.pk,
        "task_id": held.task_id,
        "annotation_id": annotation.pk,
        "cycle_id": cycle.pk,
        "kind": "cycle",
        "job_pk": cycle.pk,
        "token_id": token_row.pk,
        "job_id": job.pk,
        "slug": proj.slug,
        "link_id": 1,
        "token": "forged-token",
    }
    return {"users": users, "ids": ids}


def _client(world: dict[str, Any], caller: str) -> Client:
    client = Client(raise_request_exception=False)
    if caller != "anonymous":
        client.force_login(world["users"][caller])
    return client


def _fill(template: Any, ids: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, ids) for v in template]
    if isinstance(template, str) and re.fullmatch(r"{\w+}", template):
        return ids[template[1:-1]]
    return template


def _request(client: Client, key: str, ids: dict[str, Any], tmp: Path) -> Any:
    method, route = key.split(" ", 1)
    if route.startswith("/api/"):
        url = re.sub(r"{(\w+)}", lambda m: str(ids[m.group(1)]), route)
        if key == "POST /api/v1/projects/{project_id}/clips":
            from tests.factories import write_tone

            wav = write_tone(tmp / "upload.wav", freq=523.0)
            with wav.open("rb") as fh:
                return client.post(url, {"file": fh})
        if key == "POST /api/v1/taxonomies/import":
            paths = tmp / "genres.txt"
            paths.write_text("Rock/Punk\nRock/Metal\nJazz\n")
            with paths.open("rb") as fh:
                return client.post(url, {"file": fh, "name": "Matrix genres"})
        if key in BODIES:
            body = _fill(BODIES[key], ids)
            return getattr(client, method.lower())(url, body, content_type="application/json")
        return getattr(client, method.lower())(url)
    url = "/" + re.sub(r"<\w+:(\w+)>", lambda m: str(ids[m.group(1)]), route)
    return getattr(client, method.lower())(url)


def _check(world: dict[str, Any], key: str, rule: Rule, tmp: Path) -> None:
    is_api = key.split(" ", 1)[1].startswith("/api/")
    wrong = []
    for caller in CALLERS:
        # Each caller in a savepoint rolled back afterwards: one caller's write (an admin's
        # skip, a new member) never changes what the next one sees.
        with transaction.atomic():
            response = _request(_client(world, caller), key, world["ids"], tmp)
            transaction.set_rollback(True)
        want, got = expected(rule, caller, is_api=is_api), outcome(response, is_api=is_api)
        if want != got:
            wrong.append(
                f"{caller}: expected {want}, got {response.status_code} {response.content[:200]!r}"
            )
    assert not wrong, f"{key}: " + "; ".join(wrong)


@pytest.mark.parametrize("key", sorted(API_TABLE))
def test_api_route_authorization(world: dict[str, Any], key: str, tmp_path: Path) -> None:
    _check(world, key, API_TABLE[key], tmp_path)


@pytest.mark.parametrize("key", sorted(PAGE_TABLE))
def test_page_route_authorization(world: dict[str, Any], key: str, tmp_path: Path) -> None:
    _check(world, key, PAGE_TABLE[key], tmp_path)


def test_the_matrix_can_fail() -> None:
    """The expectations are not vacuous: each refusal kind appears where the table says."""
    kinds = {
        expected(rule, caller, is_api=key.split(" ", 1)[1].startswith("/api/"))
        for table in (API_TABLE, PAGE_TABLE)
        for key, rule in table.items()
        for caller in CALLERS
    }
    assert kinds >= {"ok", "login", "401", "403", "404"}
