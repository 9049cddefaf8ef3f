from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Annotation, Clip, ImportJob
from annotation.services.clips import ImportSourceError, clips_import_folder, clips_import_manifest
from tests.factories import ProjectFactory, write_tone

pytestmark = pytest.mark.django_db


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
