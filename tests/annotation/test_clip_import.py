import itertools
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotation.models import Annotation, Clip, ImportJob
from annotation.services.clips import (
    ImportItem,
    ImportSourceError,
    clips_import_folder,
    clips_import_manifest,
)
from tests.factories import ProjectFactory, write_tone

pytestmark = pytest.mark.django_db


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _labels_of(clip: Clip) -> set[str]:
    ann = clip.annotations.get()
    return set(ann.labels.values_list("node__path", flat=True))


def test_folder_per_label_import_keeps_good_files_and_reports_bad(tmp_path: Path) -> None:
    project = ProjectFactory()
    write_tone(tmp_path / "Rock/Punk/a.wav", freq=300)
    write_tone(tmp_path / "Rock/Punk/b.flac", freq=310)
    write_tone(tmp_path / "Jazz/Bebop/c.ogg", freq=320)
    (tmp_path / "Jazz/Bebop/empty.wav").write_bytes(b"")
    good = (tmp_path / "Jazz/Bebop/c.ogg").read_bytes()
    (tmp_path / "Jazz/Bebop/cut.ogg").write_bytes(good[:300])
    (tmp_path / "Jazz/readme.txt").write_text("liner notes")

    job = clips_import_folder(project=project, folder=tmp_path, labels_from_folders=True)

    assert (job.n_imported, job.n_duplicate, job.n_failed) == (3, 0, 3)
    failed = dict(Clip.objects.filter(status="failed").values_list("original_name", "error"))
    assert failed["empty.wav"] == "empty file (0 bytes)"
    assert "unreadable" in failed["cut.ogg"] or "truncated" in failed["cut.ogg"]
    assert failed["readme.txt"].startswith("unsupported file type .txt")
    # Imported labels are ancestor-closed annotations from a named, auditable source.
    clip = Clip.objects.get(original_name="a.wav")
    assert _labels_of(clip) == {"Rock", "Rock/Punk"}
    ann = clip.annotations.get()
    assert ann.kind == Annotation.Kind.IMPORT and ann.source == f"import:{tmp_path}"
    assert set(ann.labels.filter(explicit=True).values_list("node__path", flat=True)) == {
        "Rock/Punk"
    }
    # A folder that is not a taxonomy path imports the clip and records the unknown label.
    assert any("labels not in taxonomy" in p["reason"] for p in job.problems) is False


def test_reimport_detects_duplicates_by_content(tmp_path: Path) -> None:
    project = ProjectFactory()
    write_tone(tmp_path / "x.wav", freq=300)
    write_tone(tmp_path / "y.wav", freq=300)  # same bytes, other name
    first = clips_import_folder(project=project, folder=tmp_path)
    assert (first.n_imported, first.n_duplicate) == (1, 1)
    again = clips_import_folder(project=project, folder=tmp_path)
    assert (again.n_imported, again.n_duplicate, again.n_failed) == (0, 2, 0)
    assert Clip.objects.filter(project=project).count() == 1
    # Another project may hold the same content.
    other = clips_import_folder(project=ProjectFactory(), folder=tmp_path)
    assert other.n_imported == 1


def test_manifest_multilabel_metadata_and_unknown_labels(tmp_path: Path) -> None:
    project = ProjectFactory()
    write_tone(tmp_path / "audio/one.wav", freq=200)
    write_tone(tmp_path / "audio/two.wav", freq=220)
    write_tone(tmp_path / "audio/three.wav", freq=240)
    (tmp_path / "m.csv").write_text(
        "path,labels,clip_id,bpm\n"
        "audio/one.wav,Rock/Punk|Jazz/Bebop,c1,120\n"
        "audio/two.wav,Rock/Polka,c2,90\n"
        "audio/three.wav,,c3,100\n"
        "audio/missing.wav,Rock,c4,80\n"
    )
    job = clips_import_manifest(project=project, manifest=tmp_path / "m.csv")
    assert (job.n_imported, job.n_failed, job.n_labels) == (3, 1, 1)
    one = Clip.objects.get(external_id="c1")
    assert one.metadata == {"clip_id": "c1", "bpm": "120"}
    assert _labels_of(one) == {"Rock", "Rock/Punk", "Jazz", "Jazz/Bebop"}
    two = Clip.objects.get(external_id="c2")
    assert two.status == "ready" and not two.annotations.exists()
    reasons = {p["item"]: p["reason"] for p in job.problems}
    assert "Rock/Polka" in reasons["line 3: c2"]
    assert reasons["line 5: c4"] == "file not found"
    assert Clip.objects.get(external_id="c4").status == "failed"


def test_manifest_without_path_column_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("file,labels\na.wav,Rock\n")
    with pytest.raises(ImportSourceError, match="line 1: a 'path' column is required"):
        clips_import_manifest(project=ProjectFactory(), manifest=tmp_path / "bad.csv")


def test_import_clips_command_prints_summary(tmp_path: Path) -> None:
    from io import StringIO

    project = ProjectFactory()
    write_tone(tmp_path / "ok.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    out = StringIO()
    call_command("import_clips", "--project", project.slug, "--folder", str(tmp_path), stdout=out)
    text = out.getvalue()
    assert "1 imported, 0 duplicate, 1 failed" in text
    assert "bad.wav" in text
    assert ImportJob.objects.get(project=project).n_failed == 1
    with pytest.raises(CommandError, match="no project"):
        call_command("import_clips", "--project", "nope", "--folder", str(tmp_path))


# Worker loss: an import is a held job that the orphan sweep resumes (tests/quality/test_sweep.py
# for the sweep's choices, tests/security/test_worker_loss.py for a real killed worker).


class _Killed(BaseException):
    """Stands for the worker dying: not an Exception, so the import does not fail the job."""


def _resumable_manifest(tmp_path: Path) -> Path:
    """Seven lines: four new files (two labelled), a copy of the first (a real duplicate), a
    missing file and an empty one (failed, the missing one without a content hash)."""
    write_tone(tmp_path / "audio/a.wav", freq=200)
    write_tone(tmp_path / "audio/b.wav", freq=220)
    (tmp_path / "audio/c.wav").write_bytes((tmp_path / "audio/a.wav").read_bytes())
    (tmp_path / "audio/empty.wav").write_bytes(b"")
    write_tone(tmp_path / "audio/d.wav", freq=260)
    write_tone(tmp_path / "audio/e.wav", freq=280)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,labels\n"
        "audio/a.wav,Rock/Punk\n"
        "audio/b.wav,\n"
        "audio/c.wav,\n"
        "audio/missing.wav,\n"
        "audio/empty.wav,\n"
        "audio/d.wav,Jazz/Bebop\n"
        "audio/e.wav,\n"
    )
    return manifest


def test_an_import_records_its_holder_attempt_and_how_to_read_it_again(tmp_path: Path) -> None:
    from refrain.jobs import worker_identity

    project = ProjectFactory()
    manifest = _resumable_manifest(tmp_path)
    job = clips_import_manifest(project=project, manifest=manifest, chunk_size=3)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.items_done) == ("done", 1, 7)
    assert (job.worker, job.worker_pid) == worker_identity()
    assert job.heartbeat_at is not None and job.finished_at is not None
    assert job.options == {"manifest": str(manifest), "chunk_size": 3}
    assert (job.n_imported, job.n_duplicate, job.n_failed, job.n_labels) == (4, 1, 2, 2)


def test_a_resumed_import_continues_the_same_job_and_counts_every_file_once(
    tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    """Killed after two committed chunks of two, swept, resent: the same job skips the four
    items it accounted for (their clips are not duplicates of themselves, the missing file gets
    no second failed clip) and imports the rest."""
    from annotation.services.clips import clips_import, manifest_items
    from annotation.tasks import import_clips
    from quality.services.sweep import orphans_sweep

    project = ProjectFactory()
    manifest = _resumable_manifest(tmp_path)

    def dies_after_four() -> Iterator[ImportItem]:
        yield from itertools.islice(manifest_items(manifest), 4)
        raise _Killed

    with pytest.raises(_Killed):
        clips_import(
            project=project,
            items=dies_after_four(),
            source_name=manifest.name,
            options={"manifest": str(manifest), "chunk_size": 2},
            chunk_size=2,
        )
    job = ImportJob.objects.get(project=project)
    assert (job.status, job.items_done, job.finished_at) == ("running", 4, None)
    assert (job.n_imported, job.n_duplicate, job.n_failed) == (2, 1, 1)
    # The process that held it is gone and its heartbeat stopped long ago.
    ImportJob.objects.filter(pk=job.pk).update(
        worker_pid=_dead_pid(), heartbeat_at=timezone.now() - timedelta(minutes=10)
    )

    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep()
    assert [(a.kind, a.id, a.action) for a in actions] == [("import", job.pk, "resumed")]
    (sent,) = callbacks
    kwargs = sent.keywords
    assert sent.args == (project.pk,)
    assert kwargs == {"job_id": job.pk, "manifest": str(manifest), "chunk_size": 2}
    summary = import_clips(project.pk, **kwargs)
    # A duplicate message finds the job no longer queued and does nothing.
    assert import_clips(project.pk, **kwargs)["skipped"]

    job.refresh_from_db()
    assert (
        summary["import_job"] == job.pk and ImportJob.objects.filter(project=project).count() == 1
    )
    assert (job.status, job.attempts, job.items_done) == ("done", 2, 7)
    assert (job.n_imported, job.n_duplicate, job.n_failed, job.n_labels) == (4, 1, 2, 2)
    assert [n["action"] for n in job.sweep_notes] == ["resumed"]
    clips = Clip.objects.filter(project=project)
    assert sorted(clips.values_list("original_name", flat=True)) == [
        "a.wav",
        "b.wav",
        "d.wav",
        "e.wav",
        "empty.wav",
        "missing.wav",
    ]
    assert clips.filter(status="failed").count() == job.n_failed
    assert Annotation.objects.filter(clip__project=project).count() == job.n_labels
    assert [p["reason"] for p in job.problems].count("file not found") == 1


def test_an_unreadable_source_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("file,labels\na.wav,Rock\n")
    project = ProjectFactory()
    with pytest.raises(ImportSourceError):
        clips_import_manifest(project=project, manifest=tmp_path / "bad.csv")
    job = ImportJob.objects.get(project=project)
    assert job.status == "failed" and job.finished_at is not None
    assert "a 'path' column is required" in job.error
