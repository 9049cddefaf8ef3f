"""Reads of features, models and predictions for the other apps (quality, acquisition, pages).

Arrays come from the artifacts storage (``active_learning.artifacts``), memory-mapped from the local
folder or from the local cache of a bucket: loading 100k x D features or 100k x K probabilities costs
a page-table walk (after one download per machine), not a query per row.

Training labels are the label that stands for each clip (:func:`annotation.selectors.current_labels`,
the one answer every reader uses), turned into arrays by :func:`training_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from active_learning.artifacts import StorageBlobs, artifact_local_path
from active_learning.core.features import FeatureStore, backend_name
from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import Project
from annotation.selectors import TaxonomyIndex, current_labels, taxonomy_index_cached
from taxonomy.hierarchy import Hierarchy

# --------------------------------------------------------------------------------------------------
# Features and predictions
# --------------------------------------------------------------------------------------------------


def latest_feature_set(
    *, project: Project, backend: str | None = None, exclude_backend: str | None = None
) -> FeatureSet | None:
    """The newest done feature set of the project (of one backend, or not of another, when given)."""
    qs = FeatureSet.objects.filter(project=project, status=JobStatus.DONE)
    if backend:
        qs = qs.filter(backend=backend)
    if exclude_backend:
        qs = qs.exclude(backend=exclude_backend)
    return qs.order_by("-created_at", "-id").first()


def feature_set_arrays(*, feature_set: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """(clip_ids (N,) int64, X (N, D) float32 memory-mapped) of a done feature set."""
    folder, _, file = feature_set.store_key.rpartition("/")
    store = FeatureStore(StorageBlobs(), prefix=folder)
    loaded = store.load(file.removesuffix(".npy"), mmap=True)
    return np.asarray(loaded.clip_ids, dtype=np.int64), loaded.X


# Feature sets that hold model inputs (spectrogram patches for the CNN) rather than embeddings:
# never used where an embedding is meant (diversity, the embedding models).
PATCH_BACKEND = "cqt-patches"


def embedding_feature_set(*, project: Project) -> FeatureSet | None:
    """The feature set the project's embedding models use: the newest done one of the project's
    ``loop_policy.embedding_backend``, else (none of it extracted yet) the newest done embedding set."""
    return latest_feature_set(
        project=project, backend=backend_name(project.loop_policy.embedding_backend)
    ) or latest_feature_set(project=project, exclude_backend=PATCH_BACKEND)


def feature_matrix(*, project: Project) -> tuple[np.ndarray, np.ndarray] | None:
    """(clip_ids (N,), X (N, D) float32 mmap) of :func:`embedding_feature_set`, or None."""
    fs = embedding_feature_set(project=project)
    if fs is None:
        return None
    return feature_set_arrays(feature_set=fs)


def latest_model_version(*, project: Project) -> ModelVersion | None:
    """The project's newest done model version."""
    return (
        ModelVersion.objects.filter(project=project, status=JobStatus.DONE)
        .order_by("-number")
        .first()
    )


def prediction_matrix(*, model_version: ModelVersion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip_ids (N,) int64, pred_probs (N, K) float32 mmap, out_of_sample (N,) bool).

    Columns follow ``TaxonomyNode.index`` of the model's taxonomy version; ``out_of_sample`` is True
    for labelled clips whose probabilities come from a fold model that did not see them.
    """
    root = model_version.artifact_key
    clip_ids = np.load(artifact_local_path(f"{root}/clip_ids.npy"))
    probs = np.load(artifact_local_path(f"{root}/pred_probs.npy"), mmap_mode="r")
    oos = np.load(artifact_local_path(f"{root}/out_of_sample.npy"))
    return clip_ids, probs, oos


def model_versions_for_page(*, project: Project) -> list[ModelVersion]:
    """All versions, newest first, with what the models page shows."""
    return list(
        ModelVersion.objects.filter(project=project)
        .select_related("feature_set", "taxonomy_version")
        .order_by("-number")
    )


#: A node whose sibling accuracy has not gone a quarter of the way from chance to perfect.
NEAR_CHANCE = 0.25


def per_node_rows(*, model_version: ModelVersion) -> list[dict[str, Any]]:
    """The version's out-of-sample per-node report (``metrics["per_node"]``) as page rows.

    Taxonomy order; nodes without a labelled clip are left out; ``near_chance`` marks a node the
    model barely picks over its siblings (its suspects there deserve little trust).
    """
    report = (model_version.metrics or {}).get("per_node") or {}
    support = report.get("support") or []
    index = taxonomy_index_cached(model_version.taxonomy_version)
    if len(support) != len(index.nodes):
        return []
    rows = []
    for i, node in enumerate(index.nodes):
        if not support[i]:
            continue
        acc, chance = report["sibling_accuracy"][i], report["sibling_chance"][i]
        other = report["confused_with"][i]
        rows.append(
            {
                "path": node.path,
                "name": node.name,
                "depth": node.depth,
                "support": support[i],
                "f1": report["f1"][i],
                "ap": report["ap"][i],
                "sibling_accuracy": acc,
                "sibling_chance": chance,
                "near_chance": acc is not None
                and chance is not None
                and acc < chance + NEAR_CHANCE * (1.0 - chance),
                "confused_with": index.nodes[other].name if other >= 0 else "",
                "confused_rate": report["confused_rate"][i],
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Training labels
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainingLabels:
    """Labels for a list of clips.

    Attributes
    ----------
    Y : (N, K) int8
        Ancestor-closed label sets (rows without labels are all zero).
    labelled : (N,) bool
        Rows that carry a label set.
    primary : (N,) int64, optional
        Each labelled row's primary node (column index; the deepest explicitly chosen node, the
        first given on ties), -1 for unlabelled rows. Leaf and top-level accuracy compare to it.
    snapshot : dict
        What the labels came from, stored on the model version (``provider``, ``annotations``...).
    """

    Y: np.ndarray
    labelled: np.ndarray
    primary: np.ndarray | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    def primary_or_deepest(self, hierarchy: Hierarchy) -> np.ndarray:
        """``primary``, or for providers that give none, each row's deepest positive node."""
        if self.primary is not None:
            return self.primary
        deepest = np.argmax(np.where(self.Y > 0, hierarchy.depth[None, :], -1), axis=1)
        return np.where(self.labelled, deepest, -1).astype(np.int64)


def training_labels(
    project: Project, index: TaxonomyIndex, clip_ids: Sequence[int]
) -> TrainingLabels:
    """The label that stands for each of ``clip_ids`` (``current_labels``) as training arrays.

    Labels on another taxonomy version than ``index``'s are left out (the row is unlabelled), as
    they are by detection. ``primary`` is the deepest node the annotator chose explicitly (the
    deepest node for rows stored without explicit flags).
    """
    pos = {int(c): i for i, c in enumerate(clip_ids)}
    Y = np.zeros((len(pos), len(index.nodes)), dtype=np.int8)
    labelled = np.zeros(len(pos), dtype=bool)
    primary = np.full(len(pos), -1, dtype=np.int64)
    current = current_labels(project=project, clip_ids=list(pos), ready_only=False)
    used: list[int] = []
    for clip_id, ann_id, node_ids, explicit, foreign in zip(
        current.clip_ids,
        current.annotation_ids,
        current.node_ids,
        current.explicit,
        current.foreign,
        strict=True,
    ):
        if foreign or any(n not in index.by_id for n in node_ids):
            continue
        row = pos[clip_id]
        Y[row, [index.by_id[n].index for n in node_ids]] = 1
        labelled[row] = True
        best_depth = -1
        for node in (index.by_id[n] for n in explicit):  # as given: the first wins a tie
            if node.depth > best_depth:
                best_depth, primary[row] = node.depth, node.index
        used.append(ann_id)
    # Stored labels are ancestor-closed already; close again so the contract holds even for rows
    # written by older importers.
    hierarchy = Hierarchy(index.parents_array)
    Y = hierarchy.ancestor_close(Y)
    for row in np.flatnonzero(labelled & (primary < 0)):
        primary[row] = int(np.argmax(np.where(Y[row] > 0, hierarchy.depth, -1)))
    return TrainingLabels(
        Y=Y,
        labelled=labelled,
        primary=primary,
        snapshot={"labels": "current", "annotations": sorted(used)},
    )
