"""Clips in an S3-compatible bucket (issue 16), against a real HTTP S3 endpoint (moto's server).

Import from a bucket (new objects, a re-run, a missing bucket, access denied, an object gone between
listing and probing, no credentials), audio read through the bounded cache, uploads and served
copies in a media bucket, presigned serving after the permission check, visuals made at import, and
the local default unchanged. The worker test runs a real ``cpu`` worker that shares nothing with
the web but PostgreSQL, Redis and the buckets.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.apps import apps as django_apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from annotation.models import Clip, ImportJob
from annotation.services import buckets
from annotation.services.audio_source import clip_audio_open, object_open
from annotation.services.clips import bucket_items, clip_upload, clips_import
from annotation.services.visuals import clip_visuals_stored, clips_visuals_make
from tests.factories import ProjectFactory, write_tone
from tests.s3server import (
    KEY_ID,
    REGION,
    SECRET,
    S3Server,
    media_in_bucket,
    s3_auth_enforced,
    s3_server,  # noqa: F401 - the session fixture
    s3_settings,
)
from tests.security.test_sources import SECRETS, _tagged

pytestmark = pytest.mark.django_db


@pytest.fixture
def s3(settings: Any, s3_server: S3Server, tmp_path: Path) -> S3Server:  # noqa: F811
    s3_settings(settings, s3_server)
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.REFRAIN_AUDIO_CACHE_DIR = tmp_path / "cache"
    return s3_server


def _put(server: S3Server, bucket: str, key: str, path: Path) -> bytes:
    data = path.read_bytes()
    server.client().put_object(Bucket=bucket, Key=key, Body=data)
    return data


def _tone(tmp_path: Path, name: str, freq: float, seconds: float = 1.0) -> Path:
    return write_tone(tmp_path / "src" / name, freq=freq, seconds=seconds)


def _labels_of(clip: Clip) -> set[str]:
    return set(clip.annotations.get().labels.values_list("node__path", flat=True))


def test_bucket_import_reads_objects_in_place_and_a_rerun_reads_only_new_ones(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    project = ProjectFactory()
    bucket = s3.bucket("src")
    _put(s3, bucket, "set/Rock/Punk/a.wav", _tone(tmp_path, "a.wav", 300))
    _put(s3, bucket, "set/Jazz/Bebop/b.flac", _tone(tmp_path, "b.flac", 310))
    _put(s3, bucket, "set/Rock/Punk/copy-of-a.wav", tmp_path / "src" / "a.wav")  # same bytes as a
    s3.client().put_object(Bucket=bucket, Key="set/notes.txt", Body=b"liner notes")
    _put(s3, bucket, "set/.trash/x.wav", _tone(tmp_path, "x.wav", 320))  # hidden: skipped
    _put(s3, bucket, "elsewhere/z.wav", _tone(tmp_path, "z.wav", 330))  # outside the prefix

    out = io.StringIO()
    uri = f"s3://{bucket}/set"
    call_command(
        "import_clips", "--project", project.slug, "--storage", uri, "--labels-from-folders",
        stdout=out,
    )  # fmt: skip

    job = ImportJob.objects.get(project=project)
    assert (job.n_imported, job.n_duplicate, job.n_failed) == (2, 1, 1), job.problems
    assert job.status == ImportJob.Status.DONE and job.source == uri
    assert f"{uri}: 2 imported, 1 duplicate, 1 failed" in out.getvalue()
    a = Clip.objects.get(project=project, original_name="a.wav")
    assert (a.storage, a.storage_key, a.external_id) == (
        Clip.Storage.S3,
        f"{bucket}/set/Rock/Punk/a.wav",
        "Rock/Punk/a.wav",
    )
    assert _labels_of(a) == {"Rock", "Rock/Punk"} and a.file_path == f"s3://{a.storage_key}"
    failed = Clip.objects.get(project=project, status=Clip.Status.FAILED)
    assert failed.original_name == "notes.txt" and "unsupported file type" in failed.error
    # The tag-free copy and the visuals were made at import, in the media storage (local here).
    media = Path(settings.MEDIA_ROOT)
    assert a.served_key.startswith("served/") and (media / a.served_key).is_file()
    visual = clip_visuals_stored(a)
    assert visual is not None and len(visual["peaks"]) == 1200
    assert visual["duration_s"] == pytest.approx(1.0, abs=0.01)

    # Feature extraction reads through clip_audio_open: streamed from the bucket into the cache.
    from active_learning.services.features import _clip_audio

    shutil.rmtree(settings.REFRAIN_AUDIO_CACHE_DIR)
    audio, sr = _clip_audio(a)
    assert len(audio) / sr == pytest.approx(1.0, rel=0.05)
    cached = [p for p in Path(settings.REFRAIN_AUDIO_CACHE_DIR).rglob("*") if p.is_file()]
    assert len(cached) == 1 and cached[0].suffix == ".wav"

    # A re-run reads only new objects: a.wav now holds garbage, which a download would find.
    s3.client().put_object(Bucket=bucket, Key="set/Rock/Punk/a.wav", Body=b"not audio")
    _put(s3, bucket, "set/Rock/Punk/new.wav", _tone(tmp_path, "new.wav", 340))
    call_command("import_clips", "--project", project.slug, "--storage", uri, stdout=io.StringIO())
    rerun = ImportJob.objects.filter(project=project).order_by("-pk").first()
    assert rerun is not None
    assert (rerun.n_imported, rerun.n_duplicate, rerun.n_failed) == (1, 4, 0), rerun.problems
    assert Clip.objects.filter(project=project, storage_key=f"{bucket}/set/Rock/Punk/new.wav")


def test_a_bucket_that_does_not_exist_fails_the_import_with_the_reason(s3: S3Server) -> None:
    project = ProjectFactory()
    with pytest.raises(CommandError, match="the bucket does not exist"):
        call_command("import_clips", "--project", project.slug, "--storage", "s3://no-such-b/x")
    job = ImportJob.objects.get(project=project)
    assert job.status == ImportJob.Status.FAILED
    assert "s3://no-such-b: the bucket does not exist" in job.error
    assert not Clip.objects.filter(project=project).exists()


def test_a_bucket_that_denies_access_fails_the_import_with_the_reason(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    project = ProjectFactory()
    mine, theirs = s3.bucket("mine"), s3.bucket("theirs")
    _put(s3, theirs, "a.wav", _tone(tmp_path, "a.wav", 300))
    _put(s3, mine, "b.wav", _tone(tmp_path, "b.wav", 310))
    key, secret = s3.reader_for(mine)
    s3_settings(settings, s3, key=key, secret=secret)
    with s3_auth_enforced():
        with pytest.raises(CommandError, match="access denied"):
            call_command("import_clips", "--project", project.slug, "--storage", f"s3://{theirs}")
        # The same keys may read their own bucket: the denial is the policy, not the setup.
        call_command(
            "import_clips", "--project", project.slug, "--storage", f"s3://{mine}",
            stdout=io.StringIO(),
        )  # fmt: skip
    failed, done = ImportJob.objects.filter(project=project).order_by("pk")
    assert (
        failed.status == ImportJob.Status.FAILED and "access denied (AccessDenied)" in failed.error
    )
    assert done.status == ImportJob.Status.DONE and done.n_imported == 1
    assert list(Clip.objects.filter(project=project).values_list("storage_key", flat=True)) == [
        f"{mine}/b.wav"
    ]


def test_missing_credentials_fail_the_import_with_the_reason(
    s3: S3Server, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = ProjectFactory()
    bucket = s3.bucket()
    _put(s3, bucket, "a.wav", _tone(tmp_path, "a.wav", 300))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3_settings(settings, s3, key="", secret="")
    with pytest.raises(CommandError, match="no S3 credentials"):
        call_command("import_clips", "--project", project.slug, "--storage", f"s3://{bucket}")
    job = ImportJob.objects.get(project=project)
    assert job.status == ImportJob.Status.FAILED and "AWS_ACCESS_KEY_ID" in job.error
    assert not Clip.objects.filter(project=project).exists()


def test_an_object_gone_between_listing_and_probing_is_a_failed_item_not_a_crash(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    project = ProjectFactory()
    bucket = s3.bucket()
    _put(s3, bucket, "a.wav", _tone(tmp_path, "a.wav", 300))
    _put(s3, bucket, "gone.wav", _tone(tmp_path, "gone.wav", 310))
    items = list(bucket_items(buckets.bucket_location_parse(f"s3://{bucket}")))
    s3.client().delete_object(Bucket=bucket, Key="gone.wav")  # after listing, before probing

    job = clips_import(project=project, items=items, source_name=f"s3://{bucket}")

    assert (job.n_imported, job.n_failed) == (1, 1)
    gone = Clip.objects.get(project=project, original_name="gone.wav")
    assert gone.status == Clip.Status.FAILED
    assert gone.error == "the object disappeared from the bucket after it was listed"
    assert gone.served_key == "" and gone.sha256 is None
    cache = Path(settings.REFRAIN_AUDIO_CACHE_DIR)
    assert not [p for p in cache.rglob(".*") if p.is_file()]  # no half-downloaded file left


def test_a_manifest_names_bucket_objects_and_media_keys_as_an_export_writes_them(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    from annotation.services.clips import clips_import_manifest
    from annotation.services.media import media_put_file

    project = ProjectFactory()
    bucket = s3.bucket()
    _put(s3, bucket, "set/a.wav", _tone(tmp_path, "a.wav", 300))
    media_put_file(key="uploads/old/b.wav", source=_tone(tmp_path, "b.wav", 310))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,labels\n"
        f"s3://{bucket}/set/a.wav,Rock/Punk\n"
        "media:uploads/old/b.wav,Jazz\n"
        f"s3://{bucket}/set/missing.wav,\n"
        "media:../../etc/passwd,\n"
    )
    job = clips_import_manifest(project=project, manifest=manifest)
    assert (job.n_imported, job.n_failed) == (2, 2), job.problems
    a = Clip.objects.get(project=project, storage=Clip.Storage.S3, status=Clip.Status.READY)
    assert a.storage_key == f"{bucket}/set/a.wav" and _labels_of(a) == {"Rock", "Rock/Punk"}
    b = Clip.objects.get(project=project, storage=Clip.Storage.MEDIA, status=Clip.Status.READY)
    assert b.storage_key == "uploads/old/b.wav"
    reasons = sorted(p["reason"] for p in job.problems)
    assert reasons == ["the object is not in the storage", "the object is not in the storage"]


def test_an_object_larger_than_the_cache_is_refused_without_a_download(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    project = ProjectFactory()
    bucket = s3.bucket()
    size = len(_put(s3, bucket, "big.wav", _tone(tmp_path, "big.wav", 300, seconds=2.0)))
    settings.REFRAIN_AUDIO_CACHE_BYTES = size - 1
    job = clips_import(
        project=project,
        items=bucket_items(buckets.bucket_location_parse(f"s3://{bucket}")),
        source_name=f"s3://{bucket}",
    )
    assert (job.n_imported, job.n_failed) == (0, 1)
    assert "larger than a worker's audio cache" in job.problems[0]["reason"]
    assert not Path(settings.REFRAIN_AUDIO_CACHE_DIR).exists()


def test_the_audio_cache_stays_within_its_bound(
    s3: S3Server, settings: Any, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    size = len(_put(s3, bucket, "a.wav", _tone(tmp_path, "a.wav", 300)))
    _put(s3, bucket, "b.wav", _tone(tmp_path, "b.wav", 310))
    settings.REFRAIN_AUDIO_CACHE_BYTES = int(size * 1.5)
    a = object_open((bucket, "a.wav"))
    assert object_open((bucket, "a.wav")) == a  # a hit, no second download
    past = time.time() - 3600
    os.utime(a, (past, past))  # used an hour ago: the least recently used
    b = object_open((bucket, "b.wav"))
    assert b.is_file() and not a.exists()
    total = sum(
        p.stat().st_size for p in Path(settings.REFRAIN_AUDIO_CACHE_DIR).rglob("*") if p.is_file()
    )
    assert total <= settings.REFRAIN_AUDIO_CACHE_BYTES


def test_an_upload_with_the_media_storage_in_a_bucket(
    s3: S3Server, settings: Any, team: dict[str, Any], tmp_path: Path
) -> None:
    media = s3.bucket("media")
    media_in_bucket(settings, s3, media)
    project = team["project"]
    data = _tone(tmp_path, "up.wav", 300).read_bytes()
    job, clip = clip_upload(
        project=project, upload=SimpleUploadedFile("Rock_Punk_up.wav", data, "audio/wav")
    )
    assert clip is not None and job.n_imported == 1, job.problems
    assert (clip.storage, clip.storage_key) == (
        Clip.Storage.MEDIA,
        f"uploads/{project.slug}/Rock_Punk_up.wav",
    )
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=media)["Contents"]}
    assert f"media/{clip.storage_key}" in keys and f"media/{clip.served_key}" in keys
    assert not Path(settings.MEDIA_ROOT).exists()  # nothing on this machine's disk
    # The web request left the visuals to a worker; the worker's service makes them from the bucket.
    assert clip_visuals_stored(clip) is None
    assert clips_visuals_make(clip_ids=[clip.pk]) == {"made": 1, "failed": 0}
    assert clip_visuals_stored(clip) is not None
    assert clip_audio_open(clip).read_bytes() == data
    # Label Studio's signed link answers with the same presigned redirect, for its origin.
    from annotation.integrations.labelstudio.services import clip_audio_url
    from tests.security.test_sources import _ls_link

    r = Client().get(clip_audio_url(link=_ls_link(project), clip=clip))
    assert r.status_code == 302 and r["Access-Control-Allow-Origin"] == "http://ls.example:8080"
    assert f"/{media}/media/{clip.served_key}" in r["Location"] and "Rock_Punk" not in r["Location"]
    status, _headers, body = _fetch(r["Location"])
    assert status == 200 and body == Path(clip_audio_open(clip)).read_bytes()


def _fetch(url: str, **headers: str) -> tuple[int, Any, bytes]:
    """GET ``url`` over HTTP (the S3 endpoint itself); the headers are case-insensitive."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
        return r.status, r.headers, r.read()


def test_local_media_is_the_default_and_visuals_are_made_at_import(
    settings: Any, team: dict[str, Any], tmp_path: Path
) -> None:
    """No bucket anywhere: files are read in place, copies and visuals land under MEDIA_ROOT, and
    pages read the visuals the import made (never decoding audio in the request)."""
    from annotation.services.clips import clips_import_folder

    assert settings.REFRAIN_MEDIA_STORAGE == "local"
    settings.MEDIA_ROOT = tmp_path / "media"
    project = team["project"]
    _tone(tmp_path, "a.wav", 300, seconds=2.0)
    job = clips_import_folder(project=project, folder=tmp_path / "src")
    assert job.n_imported == 1
    clip = Clip.objects.get(project=project)
    assert clip.storage == Clip.Storage.LOCAL
    assert clip.storage_key == str((tmp_path / "src" / "a.wav").resolve())
    derived = list((tmp_path / "media" / "derived").iterdir())
    assert sorted(p.suffix for p in derived) == [".json", ".png"]
    reviewer = Client()
    reviewer.force_login(team["reviewer"])
    r = reviewer.get(f"/api/v1/clips/{clip.pk}/visual")
    assert r.status_code == 200 and r.json()["duration_s"] == pytest.approx(2.0, abs=0.01)
    r = reviewer.get(f"/clips/{clip.pk}/spectrogram.png")
    assert r.status_code == 200 and b"".join(r.streaming_content)[:4] == b"\x89PNG"
    r = reviewer.get(f"/clips/{clip.pk}/audio", HTTP_RANGE="bytes=0-99")
    assert r.status_code == 206 and len(b"".join(r.streaming_content)) == 100


def test_paths_become_keys_in_the_data_migration(settings: Any, tmp_path: Path) -> None:
    from tests.factories import ClipFactory

    settings.MEDIA_ROOT = tmp_path / "media"
    media = tmp_path / "media"
    upload = ClipFactory(
        storage_key=str(media / "uploads/p/a.wav"), served_key=str(media / "served/ab/x.wav")
    )
    folder = ClipFactory(storage_key="/data/imports/b.wav", served_key="/elsewhere/y.wav")
    migration = importlib.import_module("annotation.migrations.0011_clip_storage_keys")
    migration.paths_to_keys(django_apps, None)
    upload.refresh_from_db()
    folder.refresh_from_db()
    assert (upload.storage, upload.storage_key, upload.served_key) == (
        "media",
        "uploads/p/a.wav",
        "served/ab/x.wav",
    )
    assert (folder.storage, folder.storage_key, folder.served_key) == (
        "local",
        "/data/imports/b.wav",
        "",  # outside MEDIA_ROOT: made again on first use
    )


# --- a real cpu worker that shares no disk with the web -------------------------------------------


@pytest.fixture
def cpu_worker(
    transactional_db: None, s3: S3Server, settings: Any, tmp_path: Path
) -> tuple[str, str]:
    """A ``cpu``-queue worker with its own empty VAR_DIR, the media storage in a bucket; yields
    (media bucket, source bucket)."""
    from refrain.celery import app
    from refrain.localworker import local_worker
    from tests.conftest import _database_url_for_worker

    media, source = s3.bucket("media"), s3.bucket("src")
    media_in_bucket(settings, s3, media)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(tmp_path / "worker-var"),
        "REFRAIN_MEDIA_STORAGE": "s3",
        "REFRAIN_MEDIA_BUCKET": media,
        "AWS_S3_ENDPOINT_URL": s3.url,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"
    with local_worker(env=env, logfile=log, queues="cpu", concurrency=1, name="s3test") as proc:
        yield media, source
        if proc.poll() is not None:
            pytest.fail(f"worker died:\n{log.read_text()[-3000:]}")


def _wait_for(check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.worker
def test_clips_page_imports_a_bucket_on_a_cpu_worker_and_audio_is_presigned(
    cpu_worker: tuple[str, str], s3: S3Server, team: dict[str, Any], tmp_path: Path
) -> None:
    media, source = cpu_worker
    project = team["project"]
    tagged = _tagged(tmp_path, "flac")  # Rock_Punk_0001.flac, its tags naming the genre
    _put(s3, source, "in/Rock_Punk_0001.flac", tagged)
    _put(s3, source, "in/plain.wav", _tone(tmp_path, "plain.wav", 300))
    admin, reviewer, ann, outsider = (Client() for _ in range(4))
    for client, who in [
        (admin, "admin"),
        (reviewer, "reviewer"),
        (ann, "ann"),
        (outsider, "outsider"),
    ]:
        client.force_login(team[who])

    r = admin.post(f"/p/{project.slug}/clips/", {"bucket": f"s3://{source}/in"})
    assert r.status_code == 302
    job = ImportJob.objects.get(project=project)
    assert job.options["bucket"] == f"s3://{source}/in"
    done = _wait_for(
        lambda: ImportJob.objects.filter(pk=job.pk, status__in=["done", "failed"]).first(),
        "the worker's import",
    )
    assert (done.status, done.n_imported, done.error) == ("done", 2, ""), done.problems
    page = admin.get(f"/p/{project.slug}/clips/").content.decode()
    assert "Import from a bucket" in page and f"s3://{source}/in" in page
    assert admin.post(f"/p/{project.slug}/clips/", {"bucket": "http://x/y"}).status_code == 200
    assert ImportJob.objects.filter(project=project).count() == 1  # a bad address queues nothing
    clip = Clip.objects.get(project=project, original_name="Rock_Punk_0001.flac")
    # Made by the worker, read here from the media bucket: no disk shared.
    assert clip_visuals_stored(clip) is not None

    # Presigned, after the permission check: 404 (no redirect) for people who may not hear it.
    assert outsider.get(f"/clips/{clip.pk}/audio").status_code == 404
    r = ann.get(f"/clips/{clip.pk}/audio")  # never given this clip
    assert r.status_code == 404 and "Location" not in r
    r = reviewer.get(f"/clips/{clip.pk}/audio")
    assert r.status_code == 302 and r["Cache-Control"] == "private, no-store"
    url = r["Location"]
    assert url.startswith(s3.url) and f"/media/{clip.served_key}" in urlsplit(url).path
    assert "Rock_Punk" not in url and "in/" not in urlsplit(url).path  # blind: hash-named copy
    status, headers, body = _fetch(url)
    assert (
        status == 200
        and headers["Content-Disposition"] == f'inline; filename="clip-{clip.pk}.flac"'
    )
    assert headers["Content-Type"] == "audio/flac"
    assert not any(secret in body for secret in SECRETS)
    status, headers, part = _fetch(url, Range="bytes=100-199")
    assert status == 206 and part == body[100:200]
    # An annotator who holds the clip's task hears it too; the original stays for admins.
    from annotation.services.enqueue import Manual, task_enqueue

    task_enqueue(project=project, sources=Manual.for_clips([clip.pk]))
    assert ann.post(f"/api/v1/projects/{project.pk}/tasks/next").status_code == 200
    assert ann.get(f"/clips/{clip.pk}/audio").status_code == 302
    # ?original=1 from an annotator still gets the tag-free copy.
    held = urlsplit(ann.get(f"/clips/{clip.pk}/audio?original=1")["Location"]).path
    assert held.endswith(clip.served_key)
    original = admin.get(f"/clips/{clip.pk}/audio?original=1")["Location"]
    assert urlsplit(original).path.endswith(f"/{source}/in/Rock_Punk_0001.flac")
    # The spectrogram: a presigned link to the PNG the worker stored.
    r = reviewer.get(f"/clips/{clip.pk}/spectrogram.png")
    assert r.status_code == 302 and _fetch(r["Location"])[2][:4] == b"\x89PNG"

    # A missing visual: 202 and a placeholder, and the worker is asked to make it again.
    derived = [
        o["Key"]
        for o in s3.client().list_objects_v2(Bucket=media, Prefix="media/derived/")["Contents"]
        if clip.sha256 in o["Key"]
    ]
    assert len(derived) == 2
    for key in derived:
        s3.client().delete_object(Bucket=media, Key=key)
    assert reviewer.get(f"/api/v1/clips/{clip.pk}/visual").status_code == 202
    r = reviewer.get(f"/clips/{clip.pk}/spectrogram.png")
    assert r.status_code == 202 and r.content[:4] == b"\x89PNG"
    _wait_for(
        lambda: reviewer.get(f"/api/v1/clips/{clip.pk}/visual").status_code == 200,
        "the worker to remake the visuals",
    )
    assert json.loads(reviewer.get(f"/api/v1/clips/{clip.pk}/visual").content)["peaks"]
