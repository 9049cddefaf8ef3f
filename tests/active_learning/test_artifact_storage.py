"""Artifacts in an S3 bucket (a real moto server over HTTP) and real PostgreSQL: extraction, training
and detection keep their files in the bucket only, survive a deleted local cache, write each artifact
once, and a bucket that denies access fails the job with that reason (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
from django.core.files.base import ContentFile

from active_learning.artifacts import (
    ArtifactStorageError,
    LocalArtifactStorage,
    artifact_keys,
    artifact_local_path,
    artifact_write,
    cache_evict,
    musicnn_install_dir,
    musicnn_seed,
)
from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.selectors import prediction_matrix
from active_learning.services.features import feature_set_extract_sync, musicnn_weights_dir
from active_learning.services.training import model_train_for_project, model_version_requeue
from active_learning.tasks import train_project_model
from quality.models import RunStatus
from quality.services.detection import quality_run_detect
from refrain import health
from tests.active_learning.bucket import (
    ADMIN,
    REGION,
    Bucket,
    label_leaves,
    tone_project,
    use_bucket,
)
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db
MODEL_FILES = {
    "clip_ids.npy",
    "metrics.json",
    "model.joblib",
    "out_of_sample.npy",
    "pred_probs.npy",
}


def test_extract_train_detect_with_artifacts_in_the_bucket_survive_a_deleted_cache(
    bucket: Bucket, tmp_path: Path
) -> None:
    project, index, clips = tone_project(tmp_path)
    fs = feature_set_extract_sync(project=project)
    assert fs.status == JobStatus.DONE, fs.error
    assert fs.store_key == f"project_{project.id}/features/fs_{fs.id}.npy"
    label_leaves(index, clips)
    first = model_train_for_project(project=project, n_folds=3)
    assert first.status == JobStatus.DONE, first.error
    assert first.artifact_key == f"project_{project.id}/model_1"
    run = quality_run_detect(project=project)
    assert run.status == RunStatus.DONE, run.error

    features = f"project_{project.id}/features/fs_{fs.id}"
    expected = {f"{features}.npy", f"{features}.json", f"{features}.plan.npy"} | {
        f"project_{project.id}/model_1/{f}" for f in MODEL_FILES
    }
    assert set(bucket.object_keys()) == expected  # no chunk left behind, nothing twice
    assert not bucket.local_root.exists()  # nothing written to a local artifact folder
    assert any(bucket.cache.rglob("pred_probs.npy"))  # read through the cache

    # The worker's working state is gone: the next cycle downloads again and loses nothing.
    _, probs_before, _ = prediction_matrix(model_version=first)
    probs_before = np.array(probs_before)
    shutil.rmtree(bucket.cache)
    _, probs_again, _ = prediction_matrix(model_version=first)
    np.testing.assert_array_equal(probs_again, probs_before)
    second = model_train_for_project(project=project, n_folds=3)
    assert second.status == JobStatus.DONE, second.error
    assert second.metrics["leaf_accuracy"] == first.metrics["leaf_accuracy"]
    again = quality_run_detect(project=project)
    assert again.status == RunStatus.DONE, again.error
    assert set(bucket.object_keys()) == expected | {
        f"project_{project.id}/model_2/{f}" for f in MODEL_FILES
    }


def test_a_training_task_run_again_writes_its_artifacts_once(
    bucket: Bucket, tmp_path: Path
) -> None:
    project, index, clips = tone_project(tmp_path)
    assert feature_set_extract_sync(project=project).status == JobStatus.DONE
    label_leaves(index, clips)
    mv = ModelVersion.objects.create(
        project=project, number=1, taxonomy_version=project.taxonomy_version, n_folds=3
    )
    done = train_project_model.apply(
        args=[project.id], kwargs={"model_version_id": mv.id, "n_folds": 3}
    )
    assert done.get()["status"] == JobStatus.DONE
    keys = bucket.object_keys()
    model_keys = [k for k in keys if k.startswith(f"project_{project.id}/model_1/")]
    assert {k.rsplit("/", 1)[1] for k in model_keys} == MODEL_FILES
    # A duplicate delivery finds the version claimed and writes nothing.
    dup = train_project_model.apply(
        args=[project.id], kwargs={"model_version_id": mv.id, "n_folds": 3}
    )
    assert dup.get()["skipped"] is True
    # A worker lost after uploading but before saving the row (the row as it was while running):
    # the sweep requeues it and it trains again from the start; the same keys are overwritten,
    # never a second copy beside them.
    ModelVersion.objects.filter(id=mv.id).update(status=JobStatus.RUNNING, artifact_key="")
    mv.refresh_from_db()
    assert model_version_requeue(model_version=mv, action="requeued", reason="worker lost")
    rerun = train_project_model.apply(
        args=[project.id], kwargs={"model_version_id": mv.id, "n_folds": 3}
    )
    assert rerun.get()["status"] == JobStatus.DONE
    assert bucket.object_keys() == keys
    assert ModelVersion.objects.filter(project=project).count() == 1


def _enable_auth(endpoint: str, value: str) -> None:
    # moto's server checks credentials and IAM policies only once this is switched on.
    response = requests.post(f"{endpoint}/moto-api/reset-auth", data=value.encode(), timeout=10)
    response.raise_for_status()


def test_a_bucket_that_denies_access_fails_the_training_with_that_reason(
    bucket: Bucket, tmp_path: Path, settings: Any, monkeypatch: Any
) -> None:
    project, index, clips = tone_project(tmp_path)
    assert feature_set_extract_sync(project=project).status == JobStatus.DONE
    label_leaves(index, clips)
    iam = boto3.client("iam", endpoint_url=bucket.endpoint, region_name=REGION, **ADMIN)
    user = f"no-access-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)  # no policy: every S3 action is denied
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    use_bucket(settings, bucket.name, bucket.prefix)
    _enable_auth(bucket.endpoint, "0")
    try:
        mv = model_train_for_project(project=project, n_folds=3)
        storage_check = health.check_storage()
    finally:
        _enable_auth(bucket.endpoint, "inf")
    assert mv.status == JobStatus.FAILED
    assert "failed: access denied" in mv.error, mv.error
    assert f"bucket {bucket.name!r}" in mv.error
    assert key["SecretAccessKey"] not in mv.error
    assert storage_check["status"] == "fail"
    assert storage_check["detail"] == "artifact write failed (S3 AccessDenied)"
    assert not mv.artifact_key


def test_healthz_reports_a_missing_bucket_and_passes_on_a_real_one(
    bucket: Bucket, settings: Any
) -> None:
    assert health.check_storage() == {"status": "ok"}
    assert bucket.object_keys() == []  # the probe is deleted
    use_bucket(settings, "refrain-no-such-bucket", "art")
    check = health.check_storage()
    assert check == {
        "status": "fail",
        "detail": "artifact write failed (S3 NoSuchBucket)",
    }
    with pytest.raises(ArtifactStorageError, match=r"no such bucket \(NoSuchBucket\)"):
        artifact_write("x/y.json", b"{}")


def test_musicnn_weights_are_read_from_the_bucket_and_cached(
    bucket: Bucket, monkeypatch: Any
) -> None:
    installed = musicnn_install_dir()
    if not (installed / "MSD_musicnn").is_dir():
        pytest.skip("run `make install` to fetch the musicnn checkpoints")
    monkeypatch.delenv("MUSICNN_WEIGHTS_DIR", raising=False)
    keys = musicnn_seed(source=installed)
    assert keys == musicnn_seed(source=installed)  # seeding again uploads nothing new
    assert set(keys) <= set(bucket.object_keys())
    local = musicnn_weights_dir()
    assert local is not None and bucket.cache in local.parents
    assert (local / "MSD_musicnn" / ".index").read_bytes() == (
        installed / "MSD_musicnn" / ".index"
    ).read_bytes()
    shutil.rmtree(bucket.cache)
    again = musicnn_weights_dir()
    assert again == local and (again / "MTT_musicnn" / ".index").is_file()


def test_the_cache_evicts_the_least_recently_used_files(bucket: Bucket) -> None:
    for i in range(4):
        artifact_write(f"lru/{i}.bin", bytes(1000))
    paths = [artifact_local_path(f"lru/{i}.bin") for i in range(4)]
    for i, p in enumerate(paths):  # 0 oldest ... 3 newest; then 0 is read again
        os.utime(p, (1000 + i, 1000 + i))
    artifact_local_path("lru/0.bin")
    freed = cache_evict(max_bytes=2500)
    assert freed == 2000
    assert [p.exists() for p in paths] == [True, False, False, True]
    # An evicted file is downloaded again on its next read.
    assert artifact_local_path("lru/1.bin").read_bytes() == bytes(1000)


def test_local_storage_writes_atomically_and_overwrites(tmp_path: Path) -> None:
    storage = LocalArtifactStorage(location=str(tmp_path))
    assert storage.save("a/b.json", ContentFile(b"1")) == "a/b.json"
    assert storage.save("a/b.json", ContentFile(b"22")) == "a/b.json"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]
    assert (tmp_path / "a" / "b.json").read_bytes() == b"22"


def test_the_migration_turns_paths_under_artifact_root_into_keys(
    settings: Any, tmp_path: Path
) -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("active_learning.migrations.0006_artifact_storage_keys")
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    project = ProjectFactory()
    inside = FeatureSet.objects.create(
        project=project,
        store_key=str(tmp_path / "artifacts" / "project_1" / "features" / "fs_1.npy"),
    )
    outside = FeatureSet.objects.create(project=project, store_key="/elsewhere/fs_2.npy")
    mv = ModelVersion.objects.create(
        project=project,
        number=1,
        taxonomy_version=project.taxonomy_version,
        artifact_key=str(tmp_path / "artifacts" / "project_1" / "model_1"),
    )
    migration._to_keys(apps, None)
    inside.refresh_from_db(), outside.refresh_from_db(), mv.refresh_from_db()
    assert inside.store_key == "project_1/features/fs_1.npy"
    assert outside.store_key == "/elsewhere/fs_2.npy"
    assert mv.artifact_key == "project_1/model_1"
    musicnn = FeatureSet.objects.create(
        project=project,
        backend="musicnn-msd+logmel-stats",
        options={"musicnn-msd": {"weights_dir": "/old/var/models/musicnn"}, "logmel-stats": {}},
    )
    migration._drop_weights_dirs(apps, None)
    musicnn.refresh_from_db()
    assert musicnn.options == {"musicnn-msd": {}, "logmel-stats": {}}
    migration._to_paths(apps, None)
    mv.refresh_from_db()
    assert mv.artifact_key == str(tmp_path / "artifacts" / "project_1" / "model_1")


def test_artifact_keys_lists_recursively(bucket: Bucket) -> None:
    artifact_write("t/a.json", json.dumps({}).encode())
    artifact_write("t/sub/b.npy", b"x")
    assert artifact_keys("t") == ["t/a.json", "t/sub/b.npy"]
    assert artifact_keys("nothing-here") == []
