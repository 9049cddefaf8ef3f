"""Clip sources are confined to the import roots; nothing outside them is stored, served or decoded."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from django.core.management import call_command
from django.test import Client

from active_learning.core.features import AudioDecodeError
from active_learning.services.features import _clip_audio
from annotation.integrations.labelstudio.services import AUDIO_SIGNING_SALT, clip_audio_url
from annotation.models import Clip, LabelStudioLink, Project
from annotation.services.clips import (
    ImportSourceError,
    clips_import_folder,
    clips_import_manifest,
)
from annotation.services.enqueue import Manual, task_enqueue
from tests.factories import ClipFactory, ProjectFactory, write_tone

pytestmark = pytest.mark.django_db

OUTSIDE = "outside the import roots"


@pytest.fixture
def root(settings: object, tmp_path: Path) -> Path:
    """One import root (tmp_path/root) and a media folder; tmp_path/outside is outside both."""
    settings.REFRAIN_IMPORT_ROOTS = [str(tmp_path / "root")]  # type: ignore[attr-defined]
    settings.MEDIA_ROOT = tmp_path / "media"  # type: ignore[attr-defined]
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def test_manifest_rows_outside_the_roots_are_rejected_and_not_stored(root: Path) -> None:
    outside_wav = write_tone(root.parent / "outside" / "secret.wav", freq=500)
    write_tone(root / "audio" / "good.wav", freq=300)
    (root / "audio" / "link.wav").symlink_to(outside_wav)
    (root / "audio" / "dirlink").symlink_to(root.parent / "outside", target_is_directory=True)
    (root / "m.csv").write_text(
        "path,labels\n"
        "audio/good.wav,Rock/Punk\n"
        "../../../../../../../../etc/passwd,Rock\n"
        "/etc/shadow,Rock\n"
        f"{outside_wav},Rock\n"
        "audio/link.wav,Rock\n"
        "audio/dirlink/secret.wav,Rock\n"
        "audio/../../outside/secret.wav,Rock\n"
    )
    project = ProjectFactory()
    job = clips_import_manifest(project=project, manifest=root / "m.csv")
    assert (job.n_imported, job.n_failed) == (1, 6)
    reasons = [p["reason"] for p in job.problems]
    assert len(reasons) == 6 and all(OUTSIDE in r for r in reasons)
    clips = list(Clip.objects.filter(project=project))
    assert len(clips) == 1 and clips[0].storage_key == str((root / "audio/good.wav").resolve())
    # Nothing in the summary says whether the outside file exists.
    assert "not found" not in str(job.problems)


def test_folder_import_skips_symlinks_that_leave_the_root(root: Path) -> None:
    outside_wav = write_tone(root.parent / "outside" / "secret.wav", freq=500)
    write_tone(root / "in" / "a.wav", freq=300)
    (root / "in" / "b.wav").symlink_to(outside_wav)
    (root / "in" / "c.wav").symlink_to(root / "in" / "a.wav")  # inside: a duplicate, fine
    project = ProjectFactory()
    job = clips_import_folder(project=project, folder=root / "in")
    assert (job.n_imported, job.n_duplicate, job.n_failed) == (1, 1, 1)
    assert OUTSIDE in job.problems[0]["reason"] and job.problems[0]["item"] == "b.wav"
    assert Clip.objects.filter(project=project).count() == 1


def test_folder_or_manifest_outside_the_roots_is_refused_unread(root: Path) -> None:
    write_tone(root.parent / "outside" / "x.wav")
    (root.parent / "outside" / "m.csv").write_text("secret first line,labels\n")
    project = ProjectFactory()
    with pytest.raises(ImportSourceError, match=OUTSIDE):
        clips_import_folder(project=project, folder=root.parent / "outside")
    with pytest.raises(ImportSourceError, match=OUTSIDE) as exc:
        clips_import_manifest(project=project, manifest=root.parent / "outside" / "m.csv")
    assert "secret" not in str(exc.value).split(":", 1)[1].replace("m.csv", "")
    with pytest.raises(ImportSourceError, match=OUTSIDE):
        clips_import_folder(project=project, folder=root / ".." / "outside")
    assert not Clip.objects.filter(project=project).exists()


def test_import_command_refuses_an_outside_folder(root: Path) -> None:
    from django.core.management.base import CommandError

    project = ProjectFactory()
    with pytest.raises(CommandError, match=OUTSIDE):
        call_command("import_clips", "--project", project.slug, "--folder", "/etc")


def test_check_clip_sources_reports_and_fixes_rows_outside(root: Path) -> None:
    good = ClipFactory(storage_key=str(write_tone(root / "ok.wav")))
    bad = ClipFactory(project=good.project, storage_key="/etc/passwd")
    sneaky = ClipFactory(project=good.project, storage_key=str(root / ".." / "outside" / "x.wav"))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("check_clip_sources", stdout=out, stderr=err)
    assert exit_.value.code == 1
    assert f"clip {bad.pk} " in out.getvalue() and f"clip {sneaky.pk} " in out.getvalue()
    assert f"clip {good.pk} " not in out.getvalue()
    call_command("check_clip_sources", "--fix", stdout=io.StringIO())
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == Clip.Status.FAILED and "outside the import roots" in bad.error
    assert good.status == Clip.Status.READY
    out = io.StringIO()
    call_command("check_clip_sources", "--project", "nope", stdout=out)
    assert "inside the import roots" in out.getvalue()


# --- serving --------------------------------------------------------------------------------------


@pytest.fixture
def reviewer_client(client: Client, team: dict[str, Any]) -> Client:
    client.force_login(team["reviewer"])
    return client


def _ls_link(project: Project) -> LabelStudioLink:
    return LabelStudioLink.objects.create(
        project=project,
        base_url="http://ls.example:8080",
        ls_project_id=5,
        api_key="token",
        webhook_secret="s3cret",
        refrain_url="",
    )


def test_nothing_is_served_from_outside_the_roots_or_for_failed_clips(
    root: Path, reviewer_client: Client, team: dict[str, Any]
) -> None:
    project = team["project"]
    outside_wav = write_tone(root.parent / "outside" / "secret.wav", freq=500)
    (root / "link.wav").symlink_to(outside_wav)
    good = ClipFactory(project=project, storage_key=str(write_tone(root / "ok.wav")))
    rows = [
        # Rows written before the roots existed, as the probe left them.
        ClipFactory(project=project, storage_key="/etc/passwd"),
        ClipFactory(project=project, storage_key=str(outside_wav)),
        ClipFactory(project=project, storage_key=str(root / ".." / "outside" / "secret.wav")),
        ClipFactory(project=project, storage_key=str(root / "link.wav")),
        ClipFactory(project=project, storage_key="/etc/passwd", status=Clip.Status.FAILED),
        # A failed clip serves nothing even when its file is inside the roots.
        ClipFactory(
            project=project,
            storage_key=str(write_tone(root / "f.wav", freq=700)),
            status=Clip.Status.FAILED,
        ),
    ]
    link = _ls_link(project)
    assert reviewer_client.get(f"/clips/{good.pk}/audio").status_code == 200
    # No visuals yet (a factory row, not an import): 202, and a worker is asked for them.
    assert reviewer_client.get(f"/api/v1/clips/{good.pk}/visual").status_code == 202
    assert reviewer_client.get(clip_audio_url(link=link, clip=good)).status_code == 200
    for clip in rows:
        assert reviewer_client.get(f"/clips/{clip.pk}/audio").status_code == 404, clip.storage_key
        assert reviewer_client.get(f"/clips/{clip.pk}/spectrogram.png").status_code == 404
        assert reviewer_client.get(f"/api/v1/clips/{clip.pk}/visual").status_code == 404
        assert reviewer_client.get(clip_audio_url(link=link, clip=clip)).status_code == 404
        with pytest.raises(AudioDecodeError):
            _clip_audio(clip)
    admin = Client()
    admin.force_login(team["admin"])
    for clip in rows:
        assert admin.get(f"/clips/{clip.pk}/audio?original=1").status_code == 404


def test_signed_audio_links_expire_and_cannot_be_forged(
    root: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from django.core import signing

    settings.REFRAIN_SIGNED_LINK_MAX_AGE = 3600
    clip = ClipFactory(storage_key=str(write_tone(root / "ok.wav")))
    link = _ls_link(clip.project)
    url = clip_audio_url(link=link, clip=clip)
    anonymous = Client()
    assert anonymous.get(url).status_code == 200
    token = url.rstrip("/").rsplit("/", 1)[1]
    # The old never-expiring Signer token for the same ids is refused, as is a re-signed value.
    old = signing.Signer(salt=AUDIO_SIGNING_SALT).sign(f"{link.id}.{clip.id}")
    assert anonymous.get(url.replace(token, old)).status_code == 404
    forged = signing.TimestampSigner(key="refrain-embedded-insecure-key-change-me-not").sign(
        f"{link.id}.{clip.id}"
    )
    assert anonymous.get(url.replace(token, forged)).status_code == 404
    now = time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 3500)
    assert anonymous.get(url).status_code == 200
    monkeypatch.setattr(signing.time, "time", lambda: now + 3700)
    assert anonymous.get(url).status_code == 404


# --- blind mode: the audio response ---------------------------------------------------------------

SECRETS = (b"PunkTitleSecret", b"PunkGenreSecret", b"CommentSecret", b"Rock_Punk")


def _id3v2(*frames: tuple[bytes, bytes]) -> bytes:
    body = b"".join(
        fid + struct.pack(">I", len(text) + 1) + b"\0\0" + b"\0" + text for fid, text in frames
    )
    n = len(body)
    size = bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])
    return b"ID3\x03\x00\x00" + size + body


def _id3v1(title: bytes) -> bytes:
    return b"TAG" + title.ljust(30, b"\0") + b"\0" * 94 + b"\x0d"


def _tagged(root: Path, ext: str) -> Path:
    """A tone named like its genre whose container tags say the genre too."""
    path = root / f"Rock_Punk_0001.{ext}"
    y = (0.3 * np.sin(np.arange(22050) * 0.05)).astype(np.float32)
    kw: dict[str, Any] = {"format": "MP3", "subtype": "MPEG_LAYER_III"} if ext == "mp3" else {}
    with sf.SoundFile(str(path), "w", samplerate=22050, channels=1, **kw) as f:
        f.title, f.genre, f.comment = "PunkTitleSecret", "PunkGenreSecret", "CommentSecret"
        f.write(y)
    if ext == "wav":  # an id3 chunk after the samples, as some taggers write
        blob = _id3v2((b"TCON", b"PunkGenreSecret"))
        data = path.read_bytes() + b"id3 " + struct.pack("<I", len(blob)) + blob
        path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])
    if ext == "mp3":  # hand-written ID3v2 in front and an ID3v1 at the end
        frames = (b"TCON", b"PunkGenreSecret"), (b"TIT2", b"PunkTitleSecret")
        path.write_bytes(_id3v2(*frames) + path.read_bytes() + _id3v1(b"PunkTitleSecret"))
    return path


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_blind_audio_carries_no_tags_and_no_original_name(
    root: Path, ext: str, team: dict[str, Any], tmp_path: Path
) -> None:
    project = team["project"]
    assert project.blind
    source = _tagged(root, ext)
    original_bytes = source.read_bytes()
    assert any(s in original_bytes for s in SECRETS[:3])  # the test file does carry tags
    job = clips_import_folder(project=project, folder=root)
    assert job.n_imported == 1, job.problems
    clip = Clip.objects.get(project=project)
    task_enqueue(project=project, sources=Manual.for_clips([clip.pk]))
    ann = Client()
    ann.force_login(team["ann"])
    assert ann.post(f"/api/v1/projects/{project.pk}/tasks/next").status_code == 200
    for who in ("ann", "reviewer"):
        c = Client()
        c.force_login(team[who])
        for query in ("", "?original=1"):  # only admins get the original
            response = c.get(f"/clips/{clip.pk}/audio{query}")
            assert response.status_code == 200, (who, query)
            body = b"".join(response.streaming_content)
            headers = str(dict(response.headers)).encode()
            for secret in SECRETS:
                assert secret not in body and secret not in headers, (who, secret)
            assert response["Content-Disposition"] == f'inline; filename="clip-{clip.pk}.{ext}"'
            served = tmp_path / f"served.{ext}"
            served.write_bytes(body)
            assert sf.info(str(served)).frames == sf.info(str(source)).frames == 22050
    page = ann.get(f"/api/v1/clips/{clip.pk}").content
    assert b"Rock_Punk" not in page
    admin = Client()
    admin.force_login(team["admin"])
    response = admin.get(f"/clips/{clip.pk}/audio?original=1")
    assert b"".join(response.streaming_content) == original_bytes
    assert "Rock_Punk" not in response["Content-Disposition"]


def test_strip_command_makes_served_copies_for_older_clips(
    root: Path, team: dict[str, Any]
) -> None:
    source = _tagged(root, "flac")
    clip = ClipFactory(
        project=team["project"], storage_key=str(source), format="flac", served_key=""
    )
    out = io.StringIO()
    call_command("check_clip_sources", "--strip", stdout=out)
    assert "1 tag-free served copies made" in out.getvalue()
    clip.refresh_from_db()
    assert clip.served_key.startswith("served/")
    served = root.parent / "media" / clip.served_key
    assert served.is_file()
    assert not any(s in served.read_bytes() for s in SECRETS)


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_ogg_comment_headers_of_any_size_are_emptied_bit_exactly(
    tmp_path: Path, subtype: str
) -> None:
    """A 300 KB comment (cover art) spreads the header over several pages; the served copy's audio
    pages are renumbered with fresh CRCs (libogg drops a page whose CRC is wrong) and decode the same.
    """
    from annotation.audio import audio_strip_tags, ogg_rewrite_comments

    plain = tmp_path / "plain.ogg"
    y = np.random.default_rng(1).normal(0, 0.1, (48000 * 3, 2)).astype(np.float32)
    sf.write(str(plain), y, 48000, format="OGG", subtype=subtype)
    tagged, served = tmp_path / "Rock_Punk.ogg", tmp_path / "served.ogg"
    big = (b"GENRE=PunkGenreSecret", b"METADATA_BLOCK_PICTURE=" + b"A" * 300_000)
    with plain.open("rb") as src, tagged.open("wb") as dst:
        ogg_rewrite_comments(src, dst, comments=big)
    assert b"PunkGenreSecret" in tagged.read_bytes()
    audio_strip_tags(tagged, served, fmt="ogg")
    body = served.read_bytes()
    assert b"PunkGenreSecret" not in body and len(body) < len(tagged.read_bytes()) - 300_000
    original, _ = sf.read(str(plain))
    for path in (tagged, served):
        decoded, _ = sf.read(str(path))
        assert np.array_equal(decoded, original), path.name
