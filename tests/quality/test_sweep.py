"""The orphan sweep and the job heartbeats, without a worker (the fault tests in
tests/security/test_worker_loss.py kill real ones)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import ImportJob, Project
from quality.models import QualityCycle, QualityRun, RunStatus
from quality.services.cycle import cycle_step_run
from quality.services.sweep import orphans_sweep
from refrain.jobs import PROCESS_PREFIX, heartbeat, holder_fields
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

LOCAL = f"{PROCESS_PREFIX}{socket.gethostname()}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _ago(seconds: float) -> Any:
    return timezone.now() - timedelta(seconds=seconds)


def _training(project: Project, **kw: Any) -> ModelVersion:
    n = ModelVersion.objects.filter(project=project).count() + 1
    fields: dict[str, Any] = {
        "project": project,
        "number": n,
        "taxonomy_version": project.taxonomy_version,
        "status": JobStatus.RUNNING,
        "attempts": 1,
        "worker": LOCAL,
        "worker_pid": _dead_pid(),
        "heartbeat_at": _ago(600),
        "started_at": _ago(900),
        "created_at": _ago(900),
        **kw,
    }
    return ModelVersion.objects.create(**fields)


def _sent(callbacks: list[Any]) -> list[tuple[str, tuple, dict]]:
    """(task name, args, kwargs) of the messages the sweep queued for after commit."""
    return [(cb.func.__self__.name, cb.args, cb.keywords) for cb in callbacks]


def test_a_training_whose_process_died_is_requeued_and_sent_again(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    mv = _training(project, n_folds=3, seed=7)
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep()
    assert [(a.kind, a.id, a.action) for a in actions] == [("training", mv.pk, "resumed")]
    assert "is gone" in actions[0].reason
    mv.refresh_from_db()
    assert (mv.status, mv.worker, mv.worker_pid) == (JobStatus.QUEUED, "", None)
    assert mv.sweep_notes[0]["action"] == "resumed"
    assert mv.sweep_notes[0]["reason"].startswith("heartbeat 600 s ago; process ")
    assert _sent(callbacks) == [
        (
            "active_learning.tasks.train_project_model",
            (project.pk,),
            {
                "trigger": mv.trigger,
                "model_version_id": mv.pk,
                "n_folds": 3,
                "seed": 7,
                "kind": "hierarchical",
            },
        )
    ]
    # Swept again at once: the row is queued with a fresh mark, nothing to do.
    with django_capture_on_commit_callbacks() as again:
        assert orphans_sweep() == []
    assert again == []


def test_live_or_fresh_jobs_are_left_alone(django_capture_on_commit_callbacks: Any) -> None:
    project = ProjectFactory()
    fresh = _training(project, heartbeat_at=timezone.now())
    alive = _training(project, worker_pid=os.getpid())  # stale heartbeat, process alive
    with django_capture_on_commit_callbacks() as callbacks:
        assert orphans_sweep() == []
    assert callbacks == []
    for mv in (fresh, alive):
        mv.refresh_from_db()
        assert mv.status == JobStatus.RUNNING and mv.sweep_notes == []


def test_without_a_broker_to_ask_the_heartbeat_age_decides() -> None:
    project = ProjectFactory()
    mv = _training(project, worker="gpu-1@elsewhere", worker_pid=4242)
    young = _training(project, worker="gpu-1@elsewhere", worker_pid=4243, heartbeat_at=_ago(30))
    actions = orphans_sweep(ask_workers=False)
    assert [(a.id, a.action) for a in actions] == [(mv.pk, "resumed")]
    assert "cannot be asked" in actions[0].reason
    young.refresh_from_db()
    assert young.status == JobStatus.RUNNING


def test_a_job_lost_too_often_is_failed_with_the_reason(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    mv = _training(project, attempts=3)
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep(max_attempts=3)
    assert [(a.id, a.action) for a in actions] == [(mv.pk, "failed")]
    assert callbacks == []
    mv.refresh_from_db()
    assert mv.status == JobStatus.FAILED and mv.finished_at is not None
    assert "gave up after 3 attempt(s)" in mv.error and mv.sweep_notes[-1]["action"] == "failed"


def test_two_sweeps_at_once_resume_a_job_once() -> None:
    from active_learning.services.training import model_version_requeue

    project = ProjectFactory()
    mv = _training(project)
    seen_by_a = ModelVersion.objects.get(pk=mv.pk)
    seen_by_b = ModelVersion.objects.get(pk=mv.pk)
    assert model_version_requeue(model_version=seen_by_a, action="resumed", reason="a")
    assert not model_version_requeue(model_version=seen_by_b, action="resumed", reason="b")
    mv.refresh_from_db()
    assert [n["reason"] for n in mv.sweep_notes] == ["a"]


def test_a_queued_job_nobody_took_is_sent_again(django_capture_on_commit_callbacks: Any) -> None:
    project = ProjectFactory()
    queued = {"status": JobStatus.QUEUED, "worker": "", "worker_pid": None, "started_at": None}
    lost = _training(project, **queued, heartbeat_at=None)
    recent = _training(project, **queued, heartbeat_at=None, created_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep(queued_stale_seconds=300)
    assert [(a.id, a.action) for a in actions] == [(lost.pk, "resent")]
    assert [name for name, _, kw in _sent(callbacks)] == [
        "active_learning.tasks.train_project_model"
    ]
    recent.refresh_from_db()
    assert recent.sweep_notes == []


def test_a_cycle_is_resumed_from_its_trigger_and_its_own_jobs_are_left_to_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    pid = _dead_pid()
    cycle = QualityCycle.objects.create(
        project=project,
        status=RunStatus.RUNNING,
        attempts=1,
        worker=LOCAL,
        worker_pid=pid,
        heartbeat_at=_ago(600),
        started_at=_ago(900),
    )
    # Inside its retrain step: the cycle's training and the features it extracts.
    own = _training(project, task_id=f"quality-cycle:{cycle.pk}:1", worker_pid=pid)
    fs = FeatureSet.objects.create(
        project=project,
        backend="logmel-stats",
        status=JobStatus.RUNNING,
        worker=LOCAL,
        worker_pid=pid,
        heartbeat_at=_ago(600),
        created_at=_ago(900),
    )
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep()
    assert [(a.kind, a.id, a.action) for a in actions] == [("cycle", cycle.pk, "resumed")]
    assert _sent(callbacks) == [
        (
            "quality.tasks.run_quality_cycle",
            (project.pk,),
            {"trigger": cycle.trigger, "cycle_id": cycle.pk},
        )
    ]
    cycle.refresh_from_db()
    assert cycle.status == RunStatus.RUNNING and cycle.worker == "" and len(cycle.sweep_notes) == 1
    for row in (own, fs):
        row.refresh_from_db()
        assert row.status == JobStatus.RUNNING and row.sweep_notes == []


def test_jobs_of_a_cycle_that_ended_are_failed() -> None:
    project = ProjectFactory()
    cycle = QualityCycle.objects.create(
        project=project, status=RunStatus.FAILED, attempts=1, finished_at=timezone.now()
    )
    mv = _training(project, task_id=f"quality-cycle:{cycle.pk}:1", heartbeat_at=timezone.now())
    run = QualityRun.objects.create(project=project, cycle=cycle, status=RunStatus.RUNNING)
    actions = orphans_sweep()
    assert {(a.kind, a.id, a.action) for a in actions} == {
        ("training", mv.pk, "failed"),
        ("run", run.pk, "failed"),
    }
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and f"cycle {cycle.pk} ended" in run.error


def test_a_standalone_detection_run_and_a_feature_set_are_requeued(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    pid = _dead_pid()
    run = QualityRun.objects.create(
        project=project,
        status=RunStatus.RUNNING,
        attempts=1,
        worker=LOCAL,
        worker_pid=pid,
        heartbeat_at=_ago(600),
    )
    fs = FeatureSet.objects.create(
        project=project,
        backend="logmel-stats",
        status=JobStatus.RUNNING,
        attempts=1,
        worker=LOCAL,
        worker_pid=pid,
        heartbeat_at=_ago(600),
    )
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep()
    assert {(a.kind, a.id) for a in actions} == {("run", run.pk), ("features", fs.pk)}
    assert sorted(_sent(callbacks)) == [
        (
            "active_learning.tasks.extract_features_for_project",
            (project.pk,),
            {"backend": "logmel-stats", "feature_set_id": fs.pk},
        ),
        ("quality.tasks.detect_label_issues", (run.pk,), {}),
    ]
    run.refresh_from_db()
    fs.refresh_from_db()
    assert run.status == RunStatus.QUEUED and fs.status == JobStatus.QUEUED


def test_a_step_redelivered_after_its_worker_died_counts_an_attempt(settings: Any) -> None:
    settings.REFRAIN_JOB_MAX_ATTEMPTS = 2
    project = ProjectFactory()
    cycle = QualityCycle.objects.create(
        project=project,
        status=RunStatus.RUNNING,
        attempts=2,
        steps_done=["retrain", "detect", "route"],
        worker="cpu-1@gone",
        worker_pid=1234,
        heartbeat_at=_ago(5),
    )
    cycle = cycle_step_run(cycle=cycle, step="acquire", finish=True)
    assert cycle.status == RunStatus.FAILED and cycle.worker == ""
    assert "lost inside a step 2 time(s)" in cycle.error
    assert cycle.sweep_notes[-1]["action"] == "failed"


def test_the_command_sweeps_once_and_prints_what_it_did() -> None:
    project = ProjectFactory()
    mv = _training(project)
    out = StringIO()
    call_command("sweep_orphans", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["n"] == 1 and summary["actions"][0]["id"] == mv.pk


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_refreshes_the_row_while_the_block_runs() -> None:
    project = ProjectFactory()
    mv = _training(project, **holder_fields(now=_ago(600)))
    before = mv.heartbeat_at
    with heartbeat(ModelVersion, mv.pk, interval=0.05):
        deadline = time.monotonic() + 20
        while ModelVersion.objects.get(pk=mv.pk).heartbeat_at == before:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
    # Another holder took the row: this process's beats no longer touch it.
    ModelVersion.objects.filter(pk=mv.pk).update(worker="other@host", heartbeat_at=before)
    with heartbeat(ModelVersion, mv.pk, interval=0.01):
        time.sleep(0.2)
    assert ModelVersion.objects.get(pk=mv.pk).heartbeat_at == before


def _import(project: Project, **kw: Any) -> ImportJob:
    fields: dict[str, Any] = {
        "project": project,
        "source": "/imports/batch",
        "status": ImportJob.Status.RUNNING,
        "options": {"folder": "/imports/batch", "labels_from_folders": True},
        "items_done": 256,
        "attempts": 1,
        "worker": LOCAL,
        "worker_pid": _dead_pid(),
        "heartbeat_at": _ago(600),
        "started_at": _ago(900),
        **kw,
    }
    return ImportJob.objects.create(**fields)


def test_an_import_whose_worker_died_is_requeued_and_resent_with_its_job_id(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    job = _import(project)
    fresh = _import(project, heartbeat_at=timezone.now())
    alive = _import(project, worker_pid=os.getpid())
    done = _import(project, status=ImportJob.Status.DONE, finished_at=_ago(700))
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep()
    assert [(a.kind, a.id, a.action) for a in actions] == [("import", job.pk, "resumed")]
    job.refresh_from_db()
    assert (job.status, job.worker, job.worker_pid, job.items_done) == ("queued", "", None, 256)
    assert job.sweep_notes[0]["reason"].startswith("heartbeat 600 s ago; process ")
    assert _sent(callbacks) == [
        (
            "annotation.tasks.import_clips",
            (project.pk,),
            {"job_id": job.pk, "folder": "/imports/batch", "labels_from_folders": True},
        )
    ]
    for other in (fresh, alive, done):
        status = other.status
        other.refresh_from_db()
        assert other.status == status and other.sweep_notes == []


def test_an_import_lost_too_often_or_not_resumable_is_failed_with_the_reason(
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = ProjectFactory()
    worn = _import(project, attempts=3)
    upload = _import(project, source="upload:x.wav", options={})
    # From before heartbeats: running, nobody recorded, no options, untouched for an hour.
    legacy = _import(project, options={}, worker="", worker_pid=None, heartbeat_at=None)
    ImportJob.objects.filter(pk=legacy.pk).update(started_at=_ago(3600))
    with django_capture_on_commit_callbacks() as callbacks:
        actions = orphans_sweep(max_attempts=3)
    assert callbacks == []
    assert sorted((a.id, a.action) for a in actions) == [
        (worn.pk, "failed"),
        (upload.pk, "failed"),
        (legacy.pk, "failed"),
    ]
    worn.refresh_from_db()
    assert worn.status == "failed" and "gave up after 3 attempt(s)" in worn.error
    for job in (upload, legacy):
        job.refresh_from_db()
        assert job.status == "failed" and job.finished_at is not None
        assert "cannot be resumed" in job.error and job.sweep_notes[-1]["action"] == "failed"
    assert "waiting since 3600 s ago" in legacy.error


def test_the_jobs_page_data_shows_an_imports_holder_heartbeat_attempts_and_notes() -> None:
    from quality.selectors import jobs_overview

    project = ProjectFactory()
    job = _import(project)
    orphans_sweep()
    (row,) = jobs_overview(project=project)["imports"]
    job.refresh_from_db()
    assert (row.kind, row.id, row.status, row.attempts) == ("import", job.pk, "queued", 1)
    assert [n["action"] for n in row.notes] == ["resumed"]
    assert row.heartbeat_at == job.heartbeat_at and row.heartbeat_age_s is not None
    ImportJob.objects.filter(pk=job.pk).update(
        status="running", worker="cpu-1@box", worker_pid=7, heartbeat_at=_ago(600), attempts=2
    )
    (row,) = jobs_overview(project=project)["imports"]
    assert (row.worker, row.worker_pid, row.attempts, row.stale) == ("cpu-1@box", 7, 2, True)
    assert row.heartbeat_age_s is not None and row.heartbeat_age_s >= 600


def test_clips_whose_consensus_update_was_never_sent_are_caught_up(
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The broker was down when these opinions committed: their consensus message was only logged.
    The sweep recomputes exactly the clips left behind, once, and leaves fresh or young ones alone."""
    from annotation.models import Annotation
    from annotation.selectors import taxonomy_index_cached
    from annotation.services.annotations import annotation_create, labels_resolve
    from quality.models import ClipConsensus
    from tests.factories import ClipFactory, UserFactory

    project = ProjectFactory()
    index = taxonomy_index_cached(project.taxonomy_version)
    punk = labels_resolve(index=index, labels=["Rock/Punk"])
    metal = labels_resolve(index=index, labels=["Rock/Metal"])
    a, b = UserFactory(), UserFactory()
    behind, young, imported, fresh = (ClipFactory(project=project) for _ in range(4))

    def opinion(clip: Any, user: Any, nodes: list[int], age_s: float, **kw: Any) -> Annotation:
        ann, _ = annotation_create(
            clip=clip,
            index=index,
            explicit_node_ids=nodes,
            source=f"user:{user.username}" if user else "import:x.csv",
            user=user,
            **kw,
        )
        Annotation.objects.filter(pk=ann.pk).update(created_at=_ago(age_s))
        return ann

    opinion(behind, a, punk, 1200)
    opinion(behind, b, metal, 1100)
    opinion(young, a, punk, 30)  # the queue still has its chance
    opinion(imported, None, punk, 1200, kind=Annotation.Kind.IMPORT)  # no message was due
    opinion(fresh, a, punk, 1200)
    ClipConsensus.objects.create(clip=fresh, project=project, node_ids=punk)

    actions = [x for x in orphans_sweep(ask_workers=False) if x.kind == "consensus"]

    assert [(x.id, x.action) for x in actions] == [(behind.pk, "recomputed")]
    row = ClipConsensus.objects.get(clip=behind)
    assert row.n_annotations == 2 and row.computed_at > _ago(60)
    assert not ClipConsensus.objects.filter(clip__in=[young, imported]).exists()
    # Caught up: the next sweep has nothing to do.
    assert not [x for x in orphans_sweep(ask_workers=False) if x.kind == "consensus"]
