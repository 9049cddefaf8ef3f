"""The dashboards' snapshots are computed on a real worker: a finished relabel cycle asks for them
(after its commit) and ``quality.tasks.refresh_dashboards`` on the broker writes them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quality.models import DashboardSnapshot, QualityCycle, RunStatus
from quality.services.cycle import cycle_step_run
from refrain.celery import app
from tests.quality.builders import make_world

PAGES = {"progress", "taxonomy", "annotators", "models", "learning"}


@pytest.mark.django_db
def test_a_finished_cycle_asks_a_worker_for_fresh_snapshots(
    django_capture_on_commit_callbacks,
) -> None:
    world = make_world(n_clips=3, planted={})
    cycle = QualityCycle.objects.create(
        project=world.project, status=RunStatus.RUNNING, steps_done=list(QualityCycle.STEPS)
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        cycle = cycle_step_run(cycle=cycle, step="acquire", finish=True)
    assert cycle.status == RunStatus.DONE
    assert len(sent) == 1  # the refresh_dashboards task for the project, sent after commit


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_refresh_task_writes_every_snapshot_on_a_worker(celery_worker_process: Path) -> None:
    world = make_world(n_clips=5, planted={})
    result = app.send_task("quality.tasks.refresh_dashboards", args=[world.project.pk])
    deadline = time.monotonic() + 120
    while not result.ready() and time.monotonic() < deadline:
        time.sleep(0.3)
    summary = result.get(timeout=5)
    assert summary["project"] == world.project.pk and set(summary["seconds"]) == PAGES
    snaps = DashboardSnapshot.objects.filter(project=world.project)
    assert set(snaps.values_list("page", flat=True)) == PAGES
    taxonomy = snaps.get(page="taxonomy").payload
    assert taxonomy["n_clips"] == 5
