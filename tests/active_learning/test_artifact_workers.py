"""A Celery worker as another "host": its own empty var/ and cache, no local artifact folder shared
with the web process, artifacts only in the S3 bucket (a real moto server). It trains from features
this process extracted, the web side reads its model from the bucket, and a worker whose whole
working directory was deleted trains again from the bucket alone (issue 16)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings as django_settings

from active_learning.models import JobStatus, ModelVersion
from active_learning.selectors import prediction_matrix
from active_learning.services.features import feature_set_extract_sync
from active_learning.tasks import train_project_model
from quality.models import RunStatus
from quality.services.detection import quality_run_detect
from refrain.celery import app
from refrain.localworker import local_worker
from tests.active_learning.bucket import (
    Bucket,
    label_leaves,
    tone_project,
)
from tests.conftest import _database_url_for_worker, _queue_exists

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _wait(res: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not res.ready():
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no answer within {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    return res.get(timeout=5)


def test_a_worker_with_its_own_empty_directory_trains_from_the_bucket_twice(
    bucket: Bucket, tmp_path: Path
) -> None:
    if django_settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    with app.connection_for_write() as conn:
        for queue in ("default", "cpu", "gpu"):
            if _queue_exists(conn, queue):
                conn.default_channel.queue_purge(queue)
    project, index, clips = tone_project(tmp_path)
    fs = feature_set_extract_sync(project=project)
    assert fs.status == JobStatus.DONE, fs.error
    label_leaves(index, clips)

    host = tmp_path / "host-b"  # everything the worker may write locally
    env = {
        "DATABASE_URL": _database_url_for_worker(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REFRAIN_VAR_DIR": str(host / "var"),
        "ARTIFACT_ROOT": str(host / "no-artifacts"),
        "REFRAIN_ARTIFACT_STORAGE": f"s3://{bucket.name}/{bucket.prefix}",
        "REFRAIN_CACHE_DIR": str(host / "cache"),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"
    summaries = []
    for _ in range(2):
        host.mkdir(parents=True, exist_ok=True)
        with local_worker(env=env, logfile=log, concurrency=1, name="hostb") as proc:
            res = train_project_model.delay(project.id, n_folds=3)
            summaries.append(_wait(res, proc, log))
        assert summaries[-1]["status"] == JobStatus.DONE, summaries[-1]
        # The worker read the features through its own cache and wrote nothing locally.
        assert any((host / "cache").rglob(f"fs_{fs.id}.npy"))
        assert not (host / "no-artifacts").exists()
        shutil.rmtree(host)  # the next start finds nothing of this one

    versions = list(ModelVersion.objects.filter(project=project).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].metrics["leaf_accuracy"] == versions[1].metrics["leaf_accuracy"]
    # This (web) process reads the worker's model from the bucket, and detects with it.
    _, probs, oos = prediction_matrix(model_version=versions[1])
    assert probs.shape[0] == len(clips) and int(np.asarray(oos).sum()) == 20
    run = quality_run_detect(project=project)
    assert run.status == RunStatus.DONE, run.error
    model_keys = [k for k in bucket.object_keys() if "/model_" in k]
    assert len(model_keys) == len(set(model_keys)) == 10
