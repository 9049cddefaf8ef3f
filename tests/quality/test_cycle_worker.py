"""The relabel cycle on a real worker and the real broker, against the test database: end to end on
a generated project (tiny tones), its retrain step routed to the ``gpu`` queue, and killed mid-cycle
(SIGKILL of the worker's process group), then restarted and re-run to completion without duplicate
tasks or issues."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from django.conf import settings

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import Clip, Task
from annotation.selectors import taxonomy_index_cached
from annotation.services.annotations import annotation_create
from quality.models import LabelIssue, QualityCycle, QualityRun, RunStatus
from refrain.celery import app
from refrain.localworker import local_worker
from tests.conftest import _database_url_for_worker, _queue_exists
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory, write_tone

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

GENRES = {"Rock/Punk": 220.0, "Electronic/House": 660.0, "Jazz/Bebop": 1500.0}
CYCLE = "quality.tasks.run_quality_cycle"

WorkerStarter = Callable[..., AbstractContextManager[subprocess.Popen[bytes]]]


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[WorkerStarter]:
    """Start real workers (as many times as a test needs) on the broker and the test database."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    with app.connection_for_write() as conn:
        for queue in ("default", "cpu", "gpu"):
            if _queue_exists(conn, queue):
                conn.default_channel.queue_purge(queue)
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        # Rows hold storage keys: the workers' artifacts storage is this process's.
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        # The clips' audio lies under tmp_path: the worker reads only inside the import roots.
        "REFRAIN_IMPORT_ROOTS": ",".join(map(str, settings.REFRAIN_IMPORT_ROOTS)),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"

    def start(queues: str = "default,cpu,gpu") -> AbstractContextManager[subprocess.Popen[bytes]]:
        return local_worker(env=env, logfile=log, concurrency=1, name="quality", queues=queues)

    yield start
    if log.exists():
        print(log.read_text()[-3000:])


def _project(tmp_path: Path, *, per_genre: int = 7, unlabelled: int = 4):
    """A generated project: tones whose pitch is the genre, one branch swap planted per genre."""
    project = ProjectFactory(
        loop_policy__relabel_budget=2,
        loop_policy__acquisition_batch_size=3,
        loop_policy__retrain_every=0,
    )
    user = MembershipFactory(project=project, user=UserFactory(username="w-ann")).user
    MembershipFactory(project=project, user=UserFactory(username="w-ann2"))
    index = taxonomy_index_cached(project.taxonomy_version)
    paths = list(GENRES)
    n = 0
    for g, (path, freq) in enumerate(GENRES.items()):
        for i in range(per_genre + unlabelled // len(GENRES) + 1):
            n += 1
            wav = write_tone(tmp_path / f"audio/{n}.wav", freq=freq * (1 + 0.01 * i), seconds=0.5)
            clip = ClipFactory(project=project, storage_key=str(wav), duration_s=0.5)
            if i >= per_genre:
                continue
            given = paths[(g + 1) % len(paths)] if i == 0 else path
            annotation_create(
                clip=clip,
                index=index,
                explicit_node_ids=[index.lookup(given).id],  # type: ignore[union-attr]
                source="user:w-ann",
                user=user,
            )
    return project


def _wait_result(res, proc: subprocess.Popen[bytes], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not res.ready():
        assert proc.poll() is None, "the worker died"
        assert time.monotonic() < deadline, "the cycle did not finish in time"
        time.sleep(0.5)
    return res.get(timeout=5)


def _assert_no_duplicates(project) -> None:
    keys = list(Task.objects.filter(project=project).values_list("dedupe_key", flat=True))
    assert len(keys) == len(set(keys))
    routed = LabelIssue.objects.filter(project=project, relabel_task__isnull=False)
    assert (
        routed.count()
        == Task.objects.filter(project=project, reason__startswith="label_issue:").count()
    )
    for clip in Clip.objects.filter(project=project):
        assert LabelIssue.objects.filter(clip=clip, status__in=LabelIssue.LIVE).count() <= 1


def test_cycle_runs_end_to_end_on_a_worker(start_worker: WorkerStarter, tmp_path: Path) -> None:
    project = _project(tmp_path)
    with start_worker() as proc:
        t0 = time.monotonic()
        summary = _wait_result(app.send_task(CYCLE, args=[project.id]), proc, timeout=400)
        elapsed = time.monotonic() - t0
    print(f"cycle on the worker: {elapsed:.1f} s")
    assert summary["status"] == "done", summary
    assert summary["steps_done"] == ["retrain", "detect", "route", "acquire"]
    model = summary["results"]["retrain"]["model"]
    assert model["status"] == JobStatus.DONE, model
    detect = summary["results"]["detect"]
    assert detect["issues"] >= 1 and detect["scored"] == 21
    # The planted branch swaps are the most suspect clips.
    top = LabelIssue.objects.filter(run__cycle_id=summary["cycle"]).order_by("rank")[:3]
    assert sum(i.issue_type == "wrong_branch" for i in top) >= 2
    assert summary["results"]["route"]["routed"] == 2
    assert Task.objects.filter(project=project, kind=Task.Kind.RELABEL).count() >= 2
    acquire = summary["results"]["acquire"]
    assert acquire["created_label"] + acquire["created_relabel"] + acquire["bumped"] >= 1
    _assert_no_duplicates(project)


def _messages(queue: str) -> int:
    with app.connection_for_write() as conn:
        if not _queue_exists(conn, queue):  # Redis knows a queue once a message went to it
            return 0
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def test_cycle_retrain_waits_for_a_gpu_worker(start_worker: WorkerStarter, tmp_path: Path) -> None:
    project = _project(tmp_path)
    with start_worker(queues="default,cpu") as proc:
        res = app.send_task(CYCLE, args=[project.id])
        deadline = time.monotonic() + 120
        # The trigger claims the cycle and hands its retrain step to the gpu queue ...
        while _messages("gpu") < 1:
            assert time.monotonic() < deadline, "the retrain step never reached the gpu queue"
            assert proc.poll() is None, "the worker died"
            time.sleep(0.2)
        cycle = QualityCycle.objects.get(project=project)
        assert cycle.status == RunStatus.RUNNING and cycle.steps_done == []
        # ... which a worker without that queue never trains.
        assert not ModelVersion.objects.filter(project=project).exists()
        assert not FeatureSet.objects.filter(project=project).exists()
    with start_worker(queues="gpu,cpu,default") as proc:
        summary = _wait_result(res, proc, timeout=400)
    assert summary["status"] == "done" and summary["cycle"] == cycle.pk, summary
    assert summary["steps_done"] == ["retrain", "detect", "route", "acquire"]
    assert summary["attempts"] == 1
    _assert_no_duplicates(project)


def test_cycle_killed_mid_way_resumes_without_duplicates(
    start_worker: WorkerStarter, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    with start_worker() as proc:
        app.send_task(CYCLE, args=[project.id])
        deadline = time.monotonic() + 300
        # Kill while the cycle is inside its first step (features or training).
        while not (
            FeatureSet.objects.filter(project=project).exists()
            or ModelVersion.objects.filter(project=project, status=JobStatus.RUNNING).exists()
        ):
            assert time.monotonic() < deadline, "the cycle never started"
            assert proc.poll() is None
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cycle = QualityCycle.objects.get(project=project)
    assert cycle.status == RunStatus.RUNNING and "retrain" not in cycle.steps_done
    with start_worker() as proc:
        summary = _wait_result(app.send_task(CYCLE, args=[project.id]), proc, timeout=400)
    assert summary["status"] == "done" and summary["cycle"] == cycle.pk, summary
    assert summary["attempts"] == 2
    assert QualityCycle.objects.filter(project=project).count() == 1
    assert QualityRun.objects.filter(project=project).count() == 1
    _assert_no_duplicates(project)
    # New clips arrive, then a second cycle on top: its retrain embeds them (and copies the rest),
    # a new run, still no duplicated task or live issue.
    for i in range(2):
        wav = write_tone(tmp_path / f"audio/late{i}.wav", freq=330.0 + 20 * i, seconds=0.5)
        ClipFactory(project=project, storage_key=str(wav), duration_s=0.5)
    with start_worker() as proc:
        again = _wait_result(app.send_task(CYCLE, args=[project.id]), proc, timeout=400)
    assert again["status"] == "done" and again["cycle"] != cycle.pk
    features = again["results"]["retrain"]["features"]
    assert (
        features["clips"] == Clip.objects.filter(project=project).count() and not features["failed"]
    )
    _assert_no_duplicates(project)
