"""Worker loss: a real worker on the real broker is SIGKILLed in the middle of feature extraction,
training and detection (its whole process group: the orphan sweep notices and a new worker finishes
the work) and of routing (its pool child only: the step's message is requeued at once and the same
worker finishes it by itself); every piece of the work exists exactly once.

A worker is caught mid-step deterministically: it is started with ``REFRAIN_FAULT_PAUSE_AT`` naming
a fault point (``refrain.jobs.fault_point``), which writes ``<point>.reached`` and waits there; the
test waits for that file, checks the job row says it is running on that worker, and kills. The
killed worker's messages stay unacknowledged on Redis until the visibility timeout (far away), so
nothing but the sweep can resume the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from django_celery_results.models import TaskResult

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.selectors import prediction_matrix
from active_learning.services.features import feature_set_create, feature_set_extract_sync
from active_learning.services.training import model_train_start
from annotation.models import Annotation, Clip, ImportJob, Project, Task
from annotation.selectors import taxonomy_index_cached
from annotation.services.annotations import annotation_create
from quality.models import LabelIssue, QualityCycle, QualityRun, RunStatus
from quality.services.sweep import orphans_sweep
from refrain.celery import app
from refrain.localworker import local_worker
from tests.conftest import _database_url_for_worker, _queue_exists
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory, write_tone

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

GENRES = {"Rock/Punk": 220.0, "Electronic/House": 660.0, "Jazz/Bebop": 1500.0}
#: Bound on any one wait (a worker start, a step, a whole resumed job) on a loaded machine.
WAIT_S = 300

Start = Callable[..., AbstractContextManager[subprocess.Popen[bytes]]]


@pytest.fixture
def faults(tmp_path: Path) -> Path:
    folder = tmp_path / "faults"
    folder.mkdir()
    return folder


@pytest.fixture
def start_worker(
    transactional_db: None, tmp_path: Path, faults: Path, settings: Any
) -> Iterator[Start]:
    """Start real workers on the broker and the test database, optionally paused at fault points."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    # Artifacts this process writes (features) go where the workers' go, never into a var/ shared
    # with earlier sessions (row ids restart with each test database).
    settings.ARTIFACT_ROOT = str(tmp_path / "var" / "artifacts")
    _purge()
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        "REFRAIN_FAULT_DIR": str(faults),
        "REFRAIN_JOB_HEARTBEAT_SECONDS": "1",
        # The test's audio lies under pytest's temp folder, an import root only in this process.
        "REFRAIN_IMPORT_ROOTS": ",".join(map(str, settings.REFRAIN_IMPORT_ROOTS)),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"

    def start(pause_at: str = "") -> AbstractContextManager[subprocess.Popen[bytes]]:
        return local_worker(
            env={**env, "REFRAIN_FAULT_PAUSE_AT": pause_at},
            logfile=log,
            concurrency=1,
            name="faults",
        )

    yield start
    # The killed workers' messages wait, unacknowledged, for the visibility timeout: drop them so
    # that no later run on this broker gets them delivered.
    _purge(unacked=True)
    if log.exists():
        print(log.read_text()[-3000:])


def _purge(*, unacked: bool = False) -> None:
    with app.connection_for_write() as conn:
        for queue in ("default", "cpu", "gpu"):
            if _queue_exists(conn, queue):
                conn.default_channel.queue_purge(queue)
        if unacked:
            conn.default_channel.client.delete("unacked", "unacked_index", "unacked_mutex")


def _until(what: str, cond: Callable[[], Any], *procs: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := cond()):
        for proc in procs:
            assert proc.poll() is None, f"the worker died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _kill_at(faults: Path, point: str, proc: subprocess.Popen[bytes]) -> int:
    """Wait until the worker stands at ``point``, SIGKILL its whole process group; the pid that
    stood there."""
    reached = faults / f"{point}.reached"
    _until(f"the worker to reach {point}", reached.exists, proc)
    pid = int(reached.read_text())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return pid


def _ready(proc: subprocess.Popen[bytes]) -> None:
    res = app.send_task("refrain.ping", args=["ready"])
    _until("the worker to answer", res.ready, proc)


def _node() -> str:
    return f"faults-{os.getpid()}@"


def _project(tmp_path: Path, *, per_genre: int = 7, unlabelled: int = 3) -> Project:
    """Tones whose pitch is the genre, one planted branch swap per genre, a few unlabelled."""
    project = ProjectFactory(
        loop_policy__relabel_budget=2,
        loop_policy__acquisition_batch_size=3,
        loop_policy__retrain_every=0,
    )
    user = MembershipFactory(project=project, user=UserFactory(username="f-ann")).user
    MembershipFactory(project=project, user=UserFactory(username="f-ann2"))
    index = taxonomy_index_cached(project.taxonomy_version)
    paths = list(GENRES)
    n = 0
    for g, (path, freq) in enumerate(GENRES.items()):
        for i in range(per_genre + unlabelled // len(GENRES)):
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
                source="user:f-ann",
                user=user,
            )
    return project


def _swept(kind: str, row_id: int) -> list[Any]:
    """One sweep (every running row is suspect: the worker's answer decides) and its actions."""
    actions = orphans_sweep(stale_seconds=0)
    assert [(a.kind, a.id, a.action) for a in actions] == [(kind, row_id, "resumed")], actions
    return actions


def test_feature_extraction_killed_mid_chunk_resumes_the_missing_chunks_once(
    start_worker: Start, faults: Path, tmp_path: Path
) -> None:
    project = ProjectFactory()
    for i in range(8):
        wav = write_tone(tmp_path / f"audio/{i}.wav", freq=200.0 * (i + 1), seconds=0.3)
        ClipFactory(project=project, storage_key=str(wav), duration_s=0.3)
    fs = feature_set_create(project=project, chunk_size=2)  # 4 chunks
    with start_worker(pause_at="features.chunk:1") as proc:
        app.send_task(
            "active_learning.tasks.extract_features_for_project",
            args=[project.pk],
            kwargs={"feature_set_id": fs.pk},
        )
        pid = _kill_at(faults, "features.chunk:1", proc)
    fs.refresh_from_db()
    assert fs.status == JobStatus.RUNNING and fs.worker.startswith(_node()) and fs.worker_pid == pid
    assert fs.n_done == 2  # chunk 0 written, chunk 1 lost with its worker

    # The dead worker does not answer: the sweep requeues the set and sends it again.
    _swept("features", fs.pk)
    with start_worker() as proc:
        _until(
            "the extraction to finish",
            lambda: FeatureSet.objects.get(pk=fs.pk).status in (JobStatus.DONE, JobStatus.FAILED),
            proc,
        )
    fs.refresh_from_db()
    assert fs.status == JobStatus.DONE, fs.error
    assert (fs.n_done, fs.n_failed, fs.attempts) == (8, 0, 2)
    assert [n["action"] for n in fs.sweep_notes] == ["resumed"]
    assert FeatureSet.objects.filter(project=project).count() == 1
    # Every chunk was embedded exactly once: chunk 0 by the first worker, the rest after the resume.
    chunks = [
        json.loads(r.result)
        for r in TaskResult.objects.filter(
            task_name="active_learning.tasks.extract_features_chunk", status="SUCCESS"
        )
    ]
    assert sorted(c["chunk"] for c in chunks if not c.get("skipped")) == [0, 1, 2, 3]


def test_training_killed_mid_fit_is_trained_once_by_the_next_worker(
    start_worker: Start, faults: Path, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    feature_set_extract_sync(project=project)
    with start_worker(pause_at="training.fit") as proc:
        mv = model_train_start(project=project, n_folds=3)
        _until("the worker to reach training.fit", (faults / "training.fit.reached").exists, proc)
        # Alive, the worker answers that its pid runs the training: the sweep leaves it alone
        # however old the heartbeat is allowed to be.
        assert orphans_sweep(stale_seconds=0) == []
        pid = _kill_at(faults, "training.fit", proc)
    mv.refresh_from_db()
    assert mv.status == JobStatus.RUNNING and mv.worker_pid == pid and mv.attempts == 1

    with start_worker() as proc:
        # The new worker has the same node name and answers: the sweep sees that the pid holding
        # the training runs nothing there any more.
        _ready(proc)
        actions = _swept("training", mv.pk)
        assert f"pid {pid} runs nothing" in actions[0].reason
        _until(
            "the training to finish",
            lambda: ModelVersion.objects.get(pk=mv.pk).status in (JobStatus.DONE, JobStatus.FAILED),
            proc,
        )
    mv.refresh_from_db()
    assert mv.status == JobStatus.DONE, mv.error
    assert mv.attempts == 2 and [n["action"] for n in mv.sweep_notes] == ["resumed"]
    assert ModelVersion.objects.filter(project=project).count() == 1
    clip_ids, _, _ = prediction_matrix(model_version=mv)
    assert len(clip_ids) == Clip.objects.filter(project=project).count()


def test_cycle_killed_in_detection_then_in_routing_completes_exactly_once(
    start_worker: Start, faults: Path, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    n_annotations = Annotation.objects.filter(clip__project=project).count()

    # 1. Killed inside detection: retrain is checkpointed, the run is running, nothing stored.
    with start_worker(pause_at="detect.find") as proc:
        app.send_task("quality.tasks.run_quality_cycle", args=[project.pk])
        pid = _kill_at(faults, "detect.find", proc)
    cycle = QualityCycle.objects.get(project=project)
    run = QualityRun.objects.get(cycle=cycle)
    assert (cycle.status, cycle.steps_done, cycle.worker_pid) == ("running", ["retrain"], pid)
    assert run.status == RunStatus.RUNNING and run.worker_pid == pid
    assert not LabelIssue.objects.filter(project=project).exists()
    # The run belongs to the cycle: the sweep resumes the cycle, whose detect step redoes it.
    _swept("cycle", cycle.pk)

    # 2. Only the pool child dies, inside routing, its tasks written but not committed: the worker
    # requeues the step's message at once (reject_on_worker_lost), a new child takes it, and the
    # step counts the lost attempt. No sweep, no restart: it completes by itself.
    with start_worker(pause_at="cycle.route") as proc:
        reached = faults / "cycle.route.reached"
        _until("the worker to reach cycle.route", reached.exists, proc)
        child = int(reached.read_text())
        cycle.refresh_from_db()
        run.refresh_from_db()
        assert (cycle.steps_done, cycle.worker_pid, cycle.attempts) == (
            ["retrain", "detect"],
            child,
            2,
        )
        assert run.status == RunStatus.DONE and run.n_issues >= 1 and run.attempts == 2
        assert not Task.objects.filter(project=project, reason__startswith="label_issue:").exists()
        os.kill(child, signal.SIGKILL)
        _until(
            "the cycle to finish",
            lambda: QualityCycle.objects.get(pk=cycle.pk).status != RunStatus.RUNNING,
            proc,
        )
    cycle.refresh_from_db()
    assert cycle.status == RunStatus.DONE, cycle.error
    assert cycle.steps_done == ["retrain", "detect", "route", "acquire"]
    assert cycle.attempts == 3 and [n["action"] for n in cycle.sweep_notes] == ["resumed"] * 2
    assert f"pid {child}) lost inside a step" in cycle.sweep_notes[1]["reason"]
    # Exactly once: one cycle, one model, one run, one set of issues, one task per routed issue.
    assert QualityCycle.objects.filter(project=project).count() == 1
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert ModelVersion.objects.get(project=project).status == JobStatus.DONE
    assert QualityRun.objects.filter(project=project).count() == 1
    run.refresh_from_db()
    issues = LabelIssue.objects.filter(project=project)
    assert issues.count() == run.n_issues and issues.filter(run=run).count() == run.n_issues
    assert len(set(issues.values_list("clip_id", flat=True))) == run.n_issues
    routed = issues.filter(relabel_task__isnull=False)
    assert routed.count() == cycle.results["route"]["routed"] == 2
    relabels = Task.objects.filter(project=project, reason__startswith="label_issue:")
    assert relabels.count() == 2
    assert set(relabels.values_list("pk", flat=True)) == set(
        routed.values_list("relabel_task", flat=True)
    )
    keys = list(Task.objects.filter(project=project).values_list("dedupe_key", flat=True))
    assert len(keys) == len(set(keys))
    assert Annotation.objects.filter(clip__project=project).count() == n_annotations


def test_import_killed_between_chunks_resumes_the_same_job_and_imports_each_file_once(
    start_worker: Start, faults: Path, tmp_path: Path
) -> None:
    project = ProjectFactory()
    folder = tmp_path / "incoming"
    for i in range(5):
        write_tone(folder / f"{i}.wav", freq=200.0 * (i + 1), seconds=0.3)
    # A real duplicate, read after the kill, of a file imported before it.
    (folder / "5.wav").write_bytes((folder / "0.wav").read_bytes())
    with start_worker(pause_at="import.chunk") as proc:
        app.send_task(
            "annotation.tasks.import_clips",
            args=[project.pk],
            kwargs={"folder": str(folder), "chunk_size": 2},
        )
        pid = _kill_at(faults, "import.chunk", proc)
    job = ImportJob.objects.get(project=project)
    assert job.status == "running" and job.worker.startswith(_node()) and job.worker_pid == pid
    assert (job.items_done, job.n_imported, job.attempts) == (2, 2, 1)  # chunk 0 committed

    _swept("import", job.pk)
    with start_worker() as proc:
        _until(
            "the import to finish",
            lambda: ImportJob.objects.get(pk=job.pk).status in ("done", "failed"),
            proc,
        )
    job.refresh_from_db()
    assert job.status == "done", job.error
    assert (job.n_imported, job.n_duplicate, job.n_failed, job.items_done) == (5, 1, 0, 6)
    assert job.attempts == 2 and [n["action"] for n in job.sweep_notes] == ["resumed"]
    assert ImportJob.objects.filter(project=project).count() == 1
    # One clip per distinct file, none twice.
    names = sorted(Clip.objects.filter(project=project).values_list("original_name", flat=True))
    assert names == ["0.wav", "1.wav", "2.wav", "3.wav", "4.wav"]
