"""A real worker on the real broker: extract -> train on a tiny generated project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.selectors import feature_matrix, latest_model_version, prediction_matrix
from annotation.selectors import TaxonomyIndex
from refrain.celery import app
from tests.active_learning.conftest import label
from tests.factories import ClipFactory, ProjectFactory, write_tone

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_extract_then_train_on_the_worker(celery_worker_process: Path, tmp_path: Path) -> None:
    project = ProjectFactory()
    index = TaxonomyIndex.for_version(project.taxonomy_version)
    clips = []
    for i in range(14):
        rock = i % 2 == 0
        path = write_tone(
            tmp_path / f"c{i}.wav", freq=(150 if rock else 2500) * (1 + 0.03 * i), seconds=0.5
        )
        clip = ClipFactory(project=project, storage_key=str(path))
        clips.append(clip)
        if i < 12:
            label(clip, index, "Rock/Punk" if rock else "Jazz/Bebop")
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    broken = ClipFactory(project=project, storage_key=str(tmp_path / "broken.wav"))

    # The project task replaces itself with the chunk chord: .get() returns finalize's summary.
    summary = app.send_task(
        "active_learning.tasks.extract_features_for_project", args=[project.id]
    ).get(timeout=240)
    assert summary["status"] == JobStatus.DONE, summary
    assert (summary["done"], summary["failed"], summary["left"]) == (14, 1, 0)
    fs = FeatureSet.objects.get(id=summary["feature_set"])
    assert fs.failures[0]["clip"] == broken.id
    clip_ids, X = feature_matrix(project=project)  # type: ignore[misc]
    assert X.shape == (14, 415) and set(clip_ids.tolist()) == {c.id for c in clips}

    # Asking again finds the finished set and enqueues nothing.
    again = app.send_task(
        "active_learning.tasks.extract_features_for_project", args=[project.id]
    ).get(timeout=60)
    assert again["feature_set"] == fs.id and FeatureSet.objects.filter(project=project).count() == 1

    result = app.send_task(
        "active_learning.tasks.train_project_model", args=[project.id], kwargs={"n_folds": 3}
    ).get(timeout=300)
    assert result["status"] == JobStatus.DONE, result
    mv = latest_model_version(project=project)
    assert mv is not None and mv.id == result["model_version"]
    assert (mv.trigger, mv.device, mv.n_labelled, mv.n_unlabelled) == ("manual", "cpu", 12, 2)
    _, probs, oos = prediction_matrix(model_version=mv)
    assert probs.shape[0] == 14 and int(oos.sum()) == 12
    assert np.isfinite(probs).all()
    assert ModelVersion.objects.filter(project=project).count() == 1
