"""A real worker process on the real broker: the round trips that matter."""

from pathlib import Path

import pytest

from annotation.models import Clip
from refrain.celery import app
from tests.factories import ProjectFactory, write_tone

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_ping_round_trip(celery_worker_process: Path) -> None:
    assert app.send_task("refrain.ping", args=["hello"]).get(timeout=30) == "hello"


def test_import_runs_on_the_worker_against_the_test_database(
    celery_worker_process: Path, tmp_path: Path
) -> None:
    project = ProjectFactory()
    write_tone(tmp_path / "in/Rock/Punk/a.wav", freq=300)
    write_tone(tmp_path / "in/Jazz/Bebop/b.wav", freq=400)
    (tmp_path / "in/Jazz/Bebop/broken.wav").write_bytes(b"")
    result = app.send_task(
        "annotation.tasks.import_clips",
        args=[project.id],
        kwargs={"folder": str(tmp_path / "in"), "labels_from_folders": True},
    ).get(timeout=60)
    assert result["imported"] == 2 and result["failed"] == 1 and result["labelled"] == 2
    assert Clip.objects.filter(project=project, status="ready").count() == 2
    assert Clip.objects.get(project=project, status="failed").error == "empty file (0 bytes)"
