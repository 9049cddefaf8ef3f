"""Training: a ModelVersion from the latest features and labels, with K-fold out-of-sample predictions.

:func:`model_version_request` allocates the next version number (project row locked) as a queued
row; :func:`model_version_claim` moves it queued -> running with a conditional UPDATE, so a duplicate
delivery of the same message finds nothing to claim and stops; :func:`model_version_run` does the work:

* features: the latest done FeatureSet, memory-mapped (N, D);
* labels: the label that stands for each clip (``active_learning.selectors.training_labels`` over
  ``annotation.selectors.current_labels``), ancestor-closed (N, K), and which annotations gave it;
* ``cross_val_predict_proba``: out-of-sample probabilities for labelled clips, full-model ones for
  unlabelled clips, then metrics on the out-of-sample rows only;
* artifacts under the key ``project_<id>/model_<n>/`` of the artifacts storage (a local folder or a
  bucket, ``active_learning.artifacts``): ``pred_probs.npy`` (N, K) float32, ``clip_ids.npy`` (N,),
  ``out_of_sample.npy`` (N,), ``model.joblib``, ``metrics.json`` (readers load them with
  ``active_learning.selectors.prediction_matrix``). The keys depend only on the version, so a
  re-run overwrites them: each artifact exists once.

Data problems (no features, too few labels) and a storage that refuses the artifacts (a bucket that
does not exist or denies access) fail the version with a reason a person can act on and never raise,
so no retry loop can start.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from active_learning.artifacts import ArtifactStorageError, artifact_write, artifact_write_file
from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.features import CQTPatchBackend
from active_learning.core.metrics import per_node_report
from active_learning.events import model_version_done
from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.selectors import (
    PATCH_BACKEND,
    TrainingLabels,
    embedding_feature_set,
    feature_set_arrays,
    latest_feature_set,
    training_labels,
)
from annotation import events
from annotation.models import Project
from annotation.selectors import TaxonomyIndex, taxonomy_index_cached
from refrain.errors import Invalid
from refrain.jobs import fault_point, heartbeat, holder_fields, sweep_note
from taxonomy.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

KINDS: dict[str, dict[str, Any]] = {
    "hierarchical": {"method": "conditional"},
    "flat": {"method": "flat"},
    # The end-to-end CNN on CQT patches (the configuration bench/al_corpus_cnn.py selected). It
    # trains wherever the task runs; on a GPU worker (the `gpu` queue) that is CUDA.
    "cnn": {
        "method": "conditional",
        "channels": [32, 64, 128, 128],
        "freq_shift": 3,
        "crop_frames": 160,
        "batch_size": 64,
        "max_epochs": 60,
    },
}


class TrainingDataError(Invalid, ValueError):
    """The project cannot be trained on as it is (no features, too few labels); the message says why."""


# --------------------------------------------------------------------------------------------------
# Request and claim
# --------------------------------------------------------------------------------------------------


def model_version_request(
    *,
    project: Project,
    trigger: str = ModelVersion.Trigger.MANUAL,
    kind: str = "hierarchical",
    n_folds: int = 5,
    seed: int = 0,
    hyperparameters: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> ModelVersion:
    """A queued ModelVersion with the next number; the row of ``task_id`` if it exists already."""
    with transaction.atomic():
        # Lock: the project row, so two requests never compute the same next number.
        Project.objects.select_for_update().filter(id=project.id).first()
        if task_id:
            existing = ModelVersion.objects.filter(task_id=task_id).first()
            if existing is not None:
                return existing
        last = ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0
        params = {**KINDS.get(kind, {}), **(hyperparameters or {})}
        return ModelVersion.objects.create(
            project=project,
            number=last + 1,
            taxonomy_version=project.taxonomy_version,
            kind=kind,
            trigger=trigger,
            n_folds=n_folds,
            seed=seed,
            hyperparameters=params,
            task_id=task_id,
        )


def model_version_claim(*, model_version: ModelVersion) -> bool:
    """queued -> running with a conditional UPDATE; False (row refreshed) when already taken."""
    # torch: imported by the worker that trains, never by the web process that imports this module.
    from active_learning.core.models import auto_device

    now = timezone.now()
    claimed = ModelVersion.objects.filter(id=model_version.id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING,
        started_at=now,
        device=auto_device().type,
        attempts=F("attempts") + 1,
        **holder_fields(now=now),
    )
    model_version.refresh_from_db()
    return bool(claimed)


def model_version_requeue(*, model_version: ModelVersion, action: str, reason: str) -> bool:
    """running (its worker gone) -> queued again, with a note; False if the row moved meanwhile.

    Conditional on the row as the caller saw it (status, worker, heartbeat), so of two sweeps
    only one requeues it. The caller sends the training message again (or trains it itself).
    """
    mv = model_version
    return bool(
        ModelVersion.objects.filter(
            id=mv.id, status=mv.status, worker=mv.worker, heartbeat_at=mv.heartbeat_at
        ).update(
            status=JobStatus.QUEUED,
            worker="",
            worker_pid=None,
            heartbeat_at=timezone.now(),
            sweep_notes=[*mv.sweep_notes, sweep_note(action, reason)],
        )
    )


def model_version_summary(*, model_version: ModelVersion) -> dict[str, Any]:
    """The JSON a task or command reports."""
    m = model_version.metrics or {}
    return {
        "model_version": model_version.id,
        "number": model_version.number,
        "status": model_version.status,
        "device": model_version.device,
        "n_labelled": model_version.n_labelled,
        "n_unlabelled": model_version.n_unlabelled,
        "metrics": {
            k: m[k] for k in ("hier_f1", "leaf_accuracy", "top_level_accuracy", "mAP") if k in m
        },
        "error": model_version.error,
    }


# --------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------


def model_version_run(*, model_version: ModelVersion) -> ModelVersion:
    """Train a claimed (running) version; data problems fail it with a reason."""
    mv = model_version
    try:
        # A daemon thread refreshes the heartbeat through the folds and epochs.
        with heartbeat(ModelVersion, mv.pk):
            fault_point("training.fit")
            _train(mv)
    except (TrainingDataError, ArtifactStorageError) as exc:
        _fail(mv, str(exc))
    except Exception as exc:
        logger.exception("training %s failed", mv)
        _fail(mv, f"{type(exc).__name__}: {exc}")
        raise
    return mv


def model_train_for_project(
    *,
    project: Project,
    trigger: str = ModelVersion.Trigger.MANUAL,
    kind: str = "hierarchical",
    n_folds: int = 5,
    seed: int = 0,
    hyperparameters: dict[str, Any] | None = None,
) -> ModelVersion:
    """Request, claim and train a version in this process (CLI ``--sync``, benchmarks)."""
    mv = model_version_request(
        project=project,
        trigger=trigger,
        kind=kind,
        n_folds=n_folds,
        seed=seed,
        hyperparameters=hyperparameters,
    )
    model_version_claim(model_version=mv)
    return model_version_run(model_version=mv)


def model_train_start(
    *,
    project: Project,
    trigger: str = ModelVersion.Trigger.MANUAL,
    kind: str = "hierarchical",
    n_folds: int = 5,
    seed: int = 0,
) -> ModelVersion:
    """Request a version and enqueue its training once the row commits."""
    # active_learning.tasks imports this module (its tasks call these services).
    from active_learning.tasks import train_project_model

    mv = model_version_request(
        project=project, trigger=trigger, kind=kind, n_folds=n_folds, seed=seed
    )
    train_project_model.delay_on_commit(
        project.id, trigger=trigger, model_version_id=mv.id, n_folds=n_folds, seed=seed, kind=kind
    )
    return mv


def _fail(mv: ModelVersion, reason: str) -> None:
    mv.status = JobStatus.FAILED
    mv.error = reason
    mv.finished_at = timezone.now()
    mv.save(update_fields=["status", "error", "finished_at"])


@dataclass
class _Data:
    feature_set: FeatureSet
    clip_ids: np.ndarray
    X: np.ndarray
    index: TaxonomyIndex
    hierarchy: Hierarchy
    labels: TrainingLabels


def _load(mv: ModelVersion) -> _Data:
    project = mv.project
    if mv.kind == "cnn":
        fs = latest_feature_set(project=project, backend=PATCH_BACKEND)
        if fs is None:
            raise TrainingDataError(
                "the cnn model trains on CQT patches: run "
                f"`manage.py extract_features --project {project.slug} --backend {PATCH_BACKEND}` first"
            )
    else:
        fs = embedding_feature_set(project=project)
        if fs is None:
            raise TrainingDataError(
                "no finished feature set for this project: run `manage.py extract_features` first"
            )
    clip_ids, X = feature_set_arrays(feature_set=fs)
    index = taxonomy_index_cached(mv.taxonomy_version)
    labels = training_labels(project, index, clip_ids.tolist())
    return _Data(fs, clip_ids, X, index, Hierarchy(index.parents_array), labels)


def training_labels_check(*, labels: TrainingLabels, hierarchy: Hierarchy, n_folds: int) -> None:
    """Raise TrainingDataError unless K-fold training is meaningful on these labels.

    Needs at least two top-level genres with ``n_folds`` labelled clips each.
    """
    Y = labels.Y[labels.labelled]
    n = int(Y.shape[0])
    if n < 2 * n_folds:
        raise TrainingDataError(
            f"too few labels: {n} labelled clip(s) with features; {n_folds}-fold training needs "
            f"at least {2 * n_folds}"
        )
    roots = hierarchy.roots
    counts = Y[:, roots].sum(axis=0)
    enough = int((counts >= n_folds).sum())
    if enough < 2:
        names = hierarchy.names or tuple(str(i) for i in range(hierarchy.n_nodes))
        seen = ", ".join(f"{names[r]}: {int(c)}" for r, c in zip(roots, counts, strict=True) if c)
        raise TrainingDataError(
            f"too few labels: {enough} top-level genre(s) with at least {n_folds} labelled clips "
            f"(need 2 classes); labelled per genre: {seen or 'none'}"
        )


def _train(mv: ModelVersion) -> None:
    t0 = time.perf_counter()
    data = _load(mv)
    hierarchy = Hierarchy(data.index.parents_array, tuple(data.index.paths))
    labelled = data.labels.labelled
    training_labels_check(labels=data.labels, hierarchy=hierarchy, n_folds=mv.n_folds)
    # The stored hyperparameters include the fitted estimator's (``seed`` among them), which the
    # version's own ``seed`` field supplies: a version trained again must not pass it twice.
    params = {k: v for k, v in mv.hyperparameters.items() if k not in ("device", "seed")}
    make_estimator: Callable[[], Any]
    if mv.kind == "cnn":
        # torch (here and below): loaded only in the process that trains, not by the web.
        from active_learning.core.cnn import LogMelCNN

        n_bins = int(data.feature_set.options.get("n_bins", 72))
        X = CQTPatchBackend.patches(data.X, n_bins)
        cnn_params = {"input": "logmel", **params}
        cnn_params["channels"] = tuple(cnn_params.get("channels", (16, 32, 64, 64)))

        def make_estimator() -> Any:
            return LogMelCNN(hierarchy.parents, n_mels=n_bins, seed=mv.seed, **cnn_params)

    else:
        from active_learning.core.models import HierarchicalClassifier  # torch, as above

        def make_estimator() -> Any:
            return HierarchicalClassifier(hierarchy.parents, seed=mv.seed, **params)

        X = np.asarray(data.X, dtype=np.float32)
    logger.info(
        "training v%s (%s): %d clips, %d labelled, %d dims, %d folds",
        mv.number,
        mv.kind,
        len(data.clip_ids),
        int(np.count_nonzero(labelled)),
        X.shape[1] if X.ndim > 1 else 0,
        mv.n_folds,
    )
    pred_probs, oos, model, metrics = cross_val_predict(
        make_estimator,
        X,
        data.labels,
        hierarchy=hierarchy,
        n_folds=mv.n_folds,
        seed=mv.seed,
    )
    metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    logger.info(
        "training v%s: out-of-sample %s in %.1f s; writing its files",
        mv.number,
        ", ".join(
            f"{k} {v:.3f}"
            for k, v in metrics.items()
            if k in ("hier_f1", "leaf_accuracy", "top_level_accuracy", "mAP")
            and isinstance(v, int | float)
        )
        or "no summary metric",
        metrics["train_seconds"],
    )

    root = f"project_{mv.project_id}/model_{mv.number}"
    _save_npy(f"{root}/pred_probs.npy", pred_probs.astype(np.float32))
    _save_npy(f"{root}/clip_ids.npy", data.clip_ids.astype(np.int64))
    _save_npy(f"{root}/out_of_sample.npy", oos.astype(bool))
    import joblib

    with tempfile.TemporaryDirectory(prefix="refrain-model-") as tmp:
        path = Path(tmp) / "model.joblib"
        joblib.dump(model, path)
        artifact_write_file(f"{root}/model.joblib", path)
    # The metrics last: a version's files are all there once metrics.json is.
    artifact_write(f"{root}/metrics.json", json.dumps(metrics, indent=1).encode())

    mv.feature_set = data.feature_set
    mv.metrics = metrics
    mv.training_snapshot = {
        **data.labels.snapshot,
        "feature_set": data.feature_set.id,
        "backend": f"{data.feature_set.backend} {data.feature_set.backend_version}",
    }
    mv.hyperparameters = {**mv.hyperparameters, **_estimator_params(model)}
    mv.n_labelled = int(labelled.sum())
    mv.n_unlabelled = int((~labelled).sum())
    mv.artifact_key = root
    mv.status = JobStatus.DONE
    mv.error = ""
    mv.finished_at = timezone.now()
    mv.save()
    events.publish(model_version_done, model_version_id=mv.pk, project_id=mv.project_id)


def _estimator_params(model: Any) -> dict[str, Any]:
    try:
        params = model.get_params()
    except AttributeError:
        return {}
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | None)}


def _save_npy(key: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    artifact_write(key, buf.getvalue())


# --------------------------------------------------------------------------------------------------
# Arrays -> arrays (thin wrappers over core)
# --------------------------------------------------------------------------------------------------


def cross_val_predict(
    make_estimator: Callable[[], Any],
    X: np.ndarray,
    labels: TrainingLabels,
    *,
    hierarchy: Hierarchy,
    n_folds: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, Any, dict[str, Any]]:
    """(pred_probs (N, K), out_of_sample (N,) bool, full model, metrics) from ``core.cv``.

    Metrics are pooled over the out-of-sample rows. Leaf and top-level accuracy choose among the
    nodes that occur as a primary label, so a branch only ever given as a second genre is never
    the predicted primary.
    """
    primary = labels.primary_or_deepest(hierarchy)
    candidates = np.unique(primary[primary >= 0])
    res = cross_val_predict_proba(
        make_estimator,
        X,
        labels.Y,
        parents=hierarchy,
        labeled_mask=labels.labelled,
        n_splits=n_folds,
        seed=seed,
        primary=np.where(primary >= 0, primary, 0),
        candidates=candidates if candidates.size else None,
    )
    metrics: dict[str, Any] = dict(res.metrics)
    metrics["per_depth_macro_f1"] = {
        k.removeprefix("macro_f1_depth_"): v
        for k, v in res.metrics.items()
        if k.startswith("macro_f1_depth_")
    }
    metrics["fold_hier_f1"] = [m.get("hier_f1") for m in res.fold_metrics]
    metrics["timings"] = res.timings
    probs = np.nan_to_num(np.asarray(res.pred_probs), nan=0.0).astype(np.float32)
    oos = np.asarray(res.out_of_sample, dtype=bool)
    metrics["per_node"] = per_node_metrics(labels.Y[oos], probs[oos], hierarchy)
    return probs, oos, res.model, _json_clean(metrics)


def per_node_metrics(Y: np.ndarray, probs: np.ndarray, hierarchy: Hierarchy) -> dict[str, Any]:
    """:func:`~active_learning.core.metrics.per_node_report` as JSON lists (column order), 4 digits.

    Empty when there are no out-of-sample rows.
    """
    if Y.shape[0] == 0:
        return {}
    report = per_node_report(Y, probs, parents=hierarchy)
    return {
        name: arr.tolist() if arr.dtype.kind == "i" else np.round(arr, 4).tolist()
        for name, arr in report.items()
    }


def _json_clean(value: Any) -> Any:
    """Floats as JSON numbers, NaN/inf as null (a metric undefined on these labels)."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
