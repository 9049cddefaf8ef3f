"""Training services: K-fold out-of-sample predictions, artifacts, rows, failures, idempotency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.selectors import latest_model_version, prediction_matrix
from active_learning.services.training import (
    model_train_for_project,
    model_version_claim,
    model_version_request,
    model_version_run,
)
from annotation.models import Annotation
from annotation.selectors import TaxonomyIndex
from taxonomy.hierarchy import Hierarchy
from tests.active_learning.conftest import project_with_features

pytestmark = pytest.mark.django_db

FAST = {"max_steps": 200, "min_steps": 100}


def test_training_writes_consistent_out_of_sample_predictions(artifacts: Path) -> None:
    project, clips, truth = project_with_features(artifacts)
    mv = model_train_for_project(project=project, n_folds=3, hyperparameters=FAST)

    assert mv.status == JobStatus.DONE, mv.error
    assert (mv.number, mv.n_labelled, mv.n_unlabelled, mv.device) == (1, 24, 4, "cpu")
    assert latest_model_version(project=project) == mv
    labelled_ids = set(
        Annotation.objects.filter(clip__project=project).values_list("id", flat=True)
    )
    assert set(mv.training_snapshot["annotations"]) == labelled_ids
    # Training reads the label that stands (annotation.selectors.current_labels).
    assert mv.training_snapshot["labels"] == "current"

    clip_ids, probs, oos = prediction_matrix(model_version=mv)
    index = TaxonomyIndex.for_version(project.taxonomy_version)
    h = Hierarchy(index.parents_array)
    assert probs.shape == (28, h.n_nodes) and probs.dtype == np.float32
    assert oos.sum() == 24 and not oos[np.isin(clip_ids, [c.id for c in clips[24:]])].any()
    # Hierarchy-consistent: a child never exceeds its parent.
    has_par = h.parents >= 0
    assert np.all(probs[:, has_par] <= probs[:, h.parents[has_par]] + 1e-6)
    # Separable synthetic features: the out-of-sample model gets them right.
    assert mv.metrics["leaf_accuracy"] >= 0.9 and mv.metrics["hier_f1"] >= 0.9
    assert set(mv.metrics["per_depth_macro_f1"]) == {"0", "1"}
    # Per node, over the out-of-sample rows: every list has one entry per node, in column order.
    per_node = mv.metrics["per_node"]
    assert all(len(v) == h.n_nodes for v in per_node.values())
    leaves = np.flatnonzero(h.is_leaf)
    assert sum(per_node["support"][k] for k in leaves) == 24
    labelled_leaves = [k for k in leaves if per_node["support"][k]]
    assert len(labelled_leaves) == 4
    assert min(per_node["sibling_accuracy"][k] for k in labelled_leaves) >= 0.5
    assert (artifacts / mv.artifact_key / "model.joblib").is_file()

    # The most probable leaf is the true one for (nearly) every clip, labelled or not.
    row = {cid: i for i, cid in enumerate(clip_ids.tolist())}
    best = leaves[np.argmax(probs[:, leaves], axis=1)]
    right = sum(int(best[row[c.id]]) == index.lookup(truth[c.id]).index for c in clips)
    assert right >= 26


def test_too_few_labels_fail_the_version_with_a_reason(artifacts: Path) -> None:
    project, _, _ = project_with_features(artifacts, n_per_leaf=1)
    mv = model_train_for_project(project=project, n_folds=5)
    assert mv.status == JobStatus.FAILED
    assert mv.error.startswith("too few labels: 4 labelled clip(s)")
    assert not mv.artifact_key


def test_one_labelled_genre_is_too_few_classes(artifacts: Path) -> None:
    project, _, _ = project_with_features(artifacts, n_per_leaf=6)
    Annotation.objects.filter(clip__project=project, labels__node__path__startswith="Jazz").delete()
    mv = model_train_for_project(project=project, n_folds=3, hyperparameters=FAST)
    assert mv.status == JobStatus.FAILED
    assert "1 top-level genre(s) with at least 3 labelled clips (need 2 classes)" in mv.error


def test_no_features_fails_with_a_hint(artifacts: Path) -> None:
    from tests.factories import ProjectFactory

    mv = model_train_for_project(project=ProjectFactory())
    assert mv.status == JobStatus.FAILED and "extract_features" in mv.error


def test_duplicate_delivery_trains_once(artifacts: Path) -> None:
    project, _, _ = project_with_features(artifacts)
    first = model_version_request(project=project, n_folds=3, task_id="msg-1", hyperparameters=FAST)
    again = model_version_request(project=project, n_folds=3, task_id="msg-1")
    assert again.id == first.id and ModelVersion.objects.filter(project=project).count() == 1

    assert model_version_claim(model_version=first)
    assert not model_version_claim(model_version=again)  # the second delivery stops here
    model_version_run(model_version=first)
    assert first.status == JobStatus.DONE
    assert not model_version_claim(model_version=first)
    assert len(prediction_matrix(model_version=first)[0]) == 28

    nxt = model_version_request(project=project)
    assert nxt.number == 2


def _add_patch_feature_set(project: object, clips: list, truth: dict, root: Path) -> FeatureSet:
    """A done cqt-patches FeatureSet: (8 bins x 12 frames) patches with energy at a leaf's rows."""
    from active_learning.core.features import FeatureStore
    from tests.active_learning.conftest import LEAVES

    rng = np.random.default_rng(1)
    rows = []
    for clip in clips:
        patch = rng.normal(-40.0, 1.0, size=(8, 12)).astype(np.float32)
        leaf = LEAVES.index(truth[clip.id])
        patch[2 * leaf : 2 * leaf + 2] += 30.0
        rows.append(patch.reshape(-1))
    fs = FeatureSet.objects.create(
        project=project,
        backend="cqt-patches",
        backend_version="1 (8x12)",
        options={"n_bins": 8, "frames": 12},
        dim=96,
        n_clips=len(clips),
    )
    store = FeatureStore(root, prefix="patches")
    store.write(
        f"fs_{fs.id}",
        np.stack(rows),
        [str(c.id) for c in clips],
        backend="cqt-patches",
        version="1",
    )
    fs.store_key = store.matrix_key(f"fs_{fs.id}")
    fs.status = JobStatus.DONE
    fs.save()
    return fs


CNN_FAST = {"channels": [4, 8], "crop_frames": 8, "min_steps": 80, "max_steps": 80, "batch_size": 8}


def test_cnn_kind_trains_on_patches_and_embeddings_stay_for_the_mlp(artifacts: Path) -> None:
    from active_learning.core.cnn import LogMelCNN
    from tests.active_learning.conftest import LEAVES

    project, clips, truth = project_with_features(artifacts)
    missing = model_train_for_project(project=project, kind="cnn", n_folds=3)
    assert missing.status == JobStatus.FAILED and "--backend cqt-patches" in missing.error

    patches = _add_patch_feature_set(project, clips, truth, artifacts)
    mv = model_train_for_project(project=project, kind="cnn", n_folds=3, hyperparameters=CNN_FAST)
    assert mv.status == JobStatus.DONE, mv.error
    assert mv.feature_set_id == patches.id and mv.hyperparameters["freq_shift"] == 3
    import joblib

    model = joblib.load(artifacts / mv.artifact_key / "model.joblib")
    assert isinstance(model, LogMelCNN) and model.n_mels == 8
    clip_ids, P, oos = prediction_matrix(model_version=mv)
    index = TaxonomyIndex.for_version(project.taxonomy_version)
    cols = [index.lookup(leaf).index for leaf in LEAVES]
    assert P.shape[0] == len(clips) and np.isfinite(P).all() and oos.sum() == 24
    by_id = {c.id: c for c in clips}
    picked = [LEAVES[int(np.argmax(P[i, cols]))] for i in range(len(clip_ids))]
    hits = [picked[i] == truth[by_id[int(cid)].id] for i, cid in enumerate(clip_ids) if oos[i]]
    assert np.mean(hits) > 0.5  # out-of-sample, chance 0.25

    # The embedding model never trains on patches, even though they are the newest feature set.
    mlp = model_train_for_project(project=project, n_folds=3, hyperparameters=FAST)
    assert mlp.status == JobStatus.DONE and mlp.feature_set_id != patches.id


def test_cqt_patch_backend_rows_round_trip() -> None:
    from active_learning.core.features import CQTPatchBackend, get_backend

    backend = get_backend("cqt-patches", frames=16)
    assert isinstance(backend, CQTPatchBackend) and backend.dim == 72 * 16
    sr = 22050
    tone = np.sin(2 * np.pi * 440.0 * np.arange(sr) / sr).astype(np.float32)
    rows = backend.embed_many([(tone, sr), (tone, sr)])
    assert rows.shape == (2, 72 * 16)
    patches = CQTPatchBackend.patches(rows)
    assert patches.shape == (2, 72, 16) and patches[0].mean(axis=1).argmax() == 33  # A4
    with pytest.raises(ValueError, match="not 72-bin"):
        CQTPatchBackend.patches(np.zeros((2, 100)))
