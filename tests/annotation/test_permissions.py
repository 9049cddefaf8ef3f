"""Who may and who may not: every page and endpoint, for each role and for an outsider."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from annotation.models import Annotation, Assignment, Task
from annotation.services import tasks as queue
from tests.factories import ClipFactory, write_tone

pytestmark = pytest.mark.django_db

ROLES = ("admin", "reviewer", "ann", "outsider")


@pytest.fixture
def world(team, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    project = team["project"]
    wav = write_tone(tmp_path / "a.wav")
    clip = ClipFactory(project=project, storage_key=str(wav))
    task = Task.objects.create(project=project, clip=clip)
    queue.task_next_for_annotator(project_id=project.pk, user=team["ann"])
    queue.annotation_submit(task_id=task.pk, user=team["ann"], labels=["Rock/Punk"])
    ann = Annotation.objects.get()
    other_clip = ClipFactory(project=project, storage_key=str(wav))  # nobody worked on it
    Task.objects.create(project=project, clip=other_clip)
    return {**team, "clip": clip, "task": task, "annotation": ann, "other_clip": other_clip}


def _as(world, who) -> Client:
    c = Client()
    c.force_login(world[who])
    return c


def _expect(world, method, url, allowed, **kw):
    for who in ROLES:
        r = getattr(_as(world, who), method)(url, **kw)
        ok = who in allowed
        assert (r.status_code < 400) == ok, f"{who} {method.upper()} {url}: {r.status_code}"
        if not ok:
            assert r.status_code in (403, 404), f"{who} {url}: {r.status_code}"


PAGES = [
    ("annotate", ("admin", "reviewer", "ann")),
    ("review/", ("admin", "reviewer")),
    ("review/{clip}/", ("admin", "reviewer")),
    ("settings/", ("admin",)),
    ("members/", ("admin",)),
    ("clips/", ("admin",)),
    ("queue/", ("admin",)),
]


@pytest.mark.parametrize(("suffix", "allowed"), PAGES)
def test_project_pages(world, suffix, allowed):
    suffix = suffix.replace("annotate", "annotate/").format(clip=world["clip"].pk)
    _expect(world, "get", f"/p/{world['project'].slug}/{suffix}", allowed)


def test_anonymous_is_sent_to_login(world):
    r = Client().get(f"/p/{world['project'].slug}/annotate/")
    assert r.status_code == 302 and "/login/" in r["Location"]
    assert Client().post(f"/api/v1/projects/{world['project'].pk}/tasks/next").status_code == 401


def test_home_lists_only_my_projects(world):
    assert world["project"].name in _as(world, "ann").get("/").content.decode()
    assert world["project"].name not in _as(world, "outsider").get("/").content.decode()


def test_project_creation_is_for_staff(world):
    world["admin"].is_staff = True
    world["admin"].save()
    _expect(world, "get", "/projects/new/", ("admin",))
    _expect(world, "get", "/taxonomies/import/", ("admin",))


def test_audio_and_spectrogram(world):
    clip, other = world["clip"].pk, world["other_clip"].pk
    # The annotator hears the clip they worked on, not one they were never given.
    _expect(world, "get", f"/clips/{clip}/audio", ("admin", "reviewer", "ann"))
    _expect(world, "get", f"/clips/{other}/audio", ("admin", "reviewer"))
    _expect(world, "get", f"/clips/{clip}/spectrogram.png", ("admin", "reviewer", "ann"))
    _expect(world, "get", f"/api/v1/clips/{clip}/visual", ("admin", "reviewer", "ann"))


def test_audio_supports_ranges(world):
    c = _as(world, "ann")
    url = f"/clips/{world['clip'].pk}/audio"
    full = b"".join(c.get(url).streaming_content)
    r = c.get(url, HTTP_RANGE="bytes=100-199")
    assert r.status_code == 206 and r["Content-Range"] == f"bytes 100-199/{len(full)}"
    assert b"".join(r.streaming_content) == full[100:200]
    r = c.get(url, HTTP_RANGE="bytes=-10")
    assert b"".join(r.streaming_content) == full[-10:]
    assert c.get(url, HTTP_RANGE=f"bytes={len(full) + 5}-").status_code == 416


def test_audio_goes_through_the_proxy_when_it_serves_media(world, settings):
    """With REFRAIN_AUDIO_ACCEL_PREFIX the permission check stays here and nginx sends the file."""
    from annotation.services.audio_source import clip_served_audio

    settings.REFRAIN_AUDIO_ACCEL_PREFIX = "/_media/"
    clip = world["clip"]
    served = clip_served_audio(clip=clip).path
    r = _as(world, "ann").get(f"/clips/{clip.pk}/audio")
    assert r.status_code == 200 and r.content == b""
    relative = served.resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()).as_posix()
    assert r["X-Accel-Redirect"] == f"/_media/{relative}"
    assert r["Content-Disposition"] == f'inline; filename="clip-{clip.pk}{served.suffix}"'
    assert r["X-Content-Type-Options"] == "nosniff"
    # Someone the clip was never given still gets 404 before any redirect.
    r = _as(world, "ann").get(f"/clips/{world['other_clip'].pk}/audio")
    assert r.status_code == 404 and "X-Accel-Redirect" not in r


API_READS = [
    ("/api/v1/projects/{project}", ("admin", "reviewer", "ann")),
    ("/api/v1/projects/{project}/members", ("admin",)),
    ("/api/v1/projects/{project}/clips", ("admin", "reviewer")),
    ("/api/v1/projects/{project}/tasks", ("admin", "reviewer")),
    ("/api/v1/projects/{project}/annotations", ("admin", "reviewer", "ann")),
    ("/api/v1/clips/{clip}", ("admin", "reviewer", "ann")),
    ("/api/v1/clips/{other}", ("admin", "reviewer")),
    ("/api/v1/clips/{clip}/annotations", ("admin", "reviewer")),
    ("/api/v1/clips/{clip}/reviews", ("admin", "reviewer")),
    ("/api/v1/annotations/{annotation}", ("admin", "reviewer", "ann")),
    ("/api/v1/taxonomies/versions/{version}", ("admin", "reviewer", "ann")),
    ("/api/v1/taxonomies/versions/{version}/nodes", ("admin", "reviewer", "ann")),
]


@pytest.mark.parametrize(("template", "allowed"), API_READS)
def test_api_reads(world, template, allowed):
    url = template.format(
        project=world["project"].pk,
        clip=world["clip"].pk,
        other=world["other_clip"].pk,
        annotation=world["annotation"].pk,
        version=world["project"].taxonomy_version_id,
    )
    _expect(world, "get", url, allowed)


def test_annotators_see_only_their_own_annotations(world):
    r = _as(world, "ann2").get(f"/api/v1/projects/{world['project'].pk}/annotations")
    assert r.status_code == 200 and r.json() == []
    assert (
        _as(world, "ann2").get(f"/api/v1/annotations/{world['annotation'].pk}").status_code == 404
    )


def test_api_writes(world):
    pid = world["project"].pk
    _expect(
        world,
        "patch",
        f"/api/v1/projects/{pid}",
        ("admin",),
        data={"blind": True},
        content_type="application/json",
    )
    for who, status in [("admin", 201), ("reviewer", 403), ("ann", 403), ("outsider", 404)]:
        r = _as(world, who).post(
            f"/api/v1/projects/{pid}/members",
            {"user": "ann3", "role": "reviewer"},
            content_type="application/json",
        )
        assert r.status_code == status, (who, r.content)
        r = _as(world, who).post(
            f"/api/v1/projects/{pid}/tasks",
            {"clip_ids": [world["other_clip"].pk], "kind": "review"},
            content_type="application/json",
        )
        assert r.status_code == status, (who, r.content)
    for who, status in [("admin", 201), ("reviewer", 201), ("ann", 403), ("outsider", 404)]:
        r = _as(world, who).post(
            f"/api/v1/clips/{world['clip'].pk}/reviews",
            {"decision": "accept", "annotation_id": world["annotation"].pk},
            content_type="application/json",
        )
        assert r.status_code == status, (who, r.content)
    r = _as(world, "ann").post(
        "/api/v1/projects", {"name": "X", "taxonomy_version_id": 1}, content_type="application/json"
    )
    assert r.status_code == 403


def test_outsider_cannot_take_or_submit(world):
    r = _as(world, "outsider").post(f"/api/v1/projects/{world['project'].pk}/tasks/next")
    assert r.status_code == 404
    r = _as(world, "ann2").post(
        f"/api/v1/tasks/{world['task'].pk}/annotations",
        {"labels": ["Rock/Punk"]},
        content_type="application/json",
    )
    assert r.status_code == 409  # a member, but not the holder
    assert Assignment.objects.filter(user=world["ann2"]).count() == 0
