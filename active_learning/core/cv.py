"""K-fold cross-validated (out-of-sample) probabilities for label-quality work.

Every labelled clip gets probabilities from a model that never saw it (its fold's model); every
unlabelled clip gets probabilities from the full model trained on all labelled clips.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from active_learning.core.metrics import evaluate
from taxonomy.hierarchy import Hierarchy, as_hierarchy

__all__ = ["CVResult", "ProbabilisticEstimator", "cross_val_predict_proba", "stratification_keys"]


class ProbabilisticEstimator(Protocol):
    def fit(self, X: Any, Y: Any) -> Any: ...

    def predict_proba(self, X: Any) -> Any: ...


@dataclass
class CVResult:
    """Out-of-sample probabilities and what produced them.

    Attributes
    ----------
    pred_probs : (N, K) float64
        Fold-model probabilities for labelled rows, full-model probabilities for unlabelled rows
        (NaN for unlabelled rows when ``fit_full=False``).
    out_of_sample : (N,) bool
        True for rows predicted by a model that did not see them (the labelled rows).
    fold : (N,) int64
        Fold that held each labelled row out; -1 for unlabelled rows.
    fold_metrics : list of dict
        :func:`active_learning.core.metrics.evaluate` on each fold's held-out rows, plus ``fit_s``.
    metrics : dict
        The same metrics pooled over all out-of-sample rows.
    model : estimator or None
        The full model (all labelled rows), when fitted.
    timings : dict
        ``folds_s``, ``full_s``, ``total_s`` wall-clock seconds.
    """

    pred_probs: npt.NDArray[np.float64]
    out_of_sample: npt.NDArray[np.bool_]
    fold: npt.NDArray[np.int64]
    fold_metrics: list[dict[str, float]]
    metrics: dict[str, float]
    model: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def stratification_keys(
    labels: npt.ArrayLike, *, parents: npt.ArrayLike | Hierarchy, min_count: int
) -> npt.NDArray[np.int64]:
    """(N,) stratum per row: its deepest positive node, merged upward until the stratum is common.

    A row's key is the deepest positive node (lowest index among equally deep ones: the "primary
    path" when the label set has several). Keys seen fewer than ``min_count`` times are replaced by
    their parent, repeatedly; keys still rare at a root fall into one shared stratum (-1).
    Unlabelled rows (no positive) get -1 too.
    """
    h = as_hierarchy(parents)
    y = np.asarray(labels)
    y = np.where(np.isfinite(y), y, 0) > 0
    depth_score = np.where(
        y, h.depth[None, :] * (h.n_nodes + 1) + (h.n_nodes - np.arange(h.n_nodes)), -1
    )
    key = np.where(y.any(axis=1), np.argmax(depth_score, axis=1), -1).astype(np.int64)
    for _ in range(h.max_depth + 1):
        vals, counts = np.unique(key[key >= 0], return_counts=True)
        rare = vals[counts < min_count]
        if rare.size == 0:
            break
        is_rare = np.isin(key, rare)
        key[is_rare] = h.parents[key[is_rare]]  # roots become -1
    return key


def _splits(
    n_splits: int,
    seed: int,
    keys: npt.NDArray[np.int64],
    groups: npt.NDArray[Any] | None,
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    idx = np.arange(keys.shape[0])
    _, counts = np.unique(keys, return_counts=True)
    can_stratify = counts.size > 1 and counts.min() >= n_splits
    splitter: Any
    if groups is not None:
        n_groups = np.unique(groups).shape[0]
        if n_groups < n_splits:
            raise ValueError(f"{n_groups} groups cannot make {n_splits} group-aware folds")
        if can_stratify:
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        else:
            splitter = GroupKFold(n_splits=n_splits)
        return [(tr, te) for tr, te in splitter.split(idx, keys, groups)]
    if can_stratify:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(idx, keys)]
    splitter = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(idx)]


def cross_val_predict_proba(
    estimator_factory: Callable[[], ProbabilisticEstimator],
    X: npt.ArrayLike,
    Y: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    labeled_mask: npt.ArrayLike | None = None,
    n_splits: int = 5,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
    stratify: npt.ArrayLike | None = None,
    fit_full: bool = True,
    primary: npt.ArrayLike | None = None,
    candidates: npt.ArrayLike | None = None,
) -> CVResult:
    """Out-of-sample probabilities for labelled rows, full-model ones for the rest.

    Parameters
    ----------
    estimator_factory : callable
        ``estimator_factory()`` returns a fresh, unfitted estimator with ``fit(X, Y)`` and
        ``predict_proba(X) -> (n, K)``. Called ``n_splits`` times (+1 for the full model).
    X : (N, D) float
        Embeddings of every clip.
    Y : (N, K) {0, 1}
        Ancestor-closed labels; rows outside ``labeled_mask`` are ignored.
    parents : (K,) int or Hierarchy
    labeled_mask : (N,) bool, optional
        Rows with trusted labels; default: rows with at least one positive label.
    n_splits : int
        Folds (>= 2).
    seed : int
        Fold-assignment seed.
    groups : (N,) array-like, optional
        Group ids (for example the source work): rows of one group never straddle train and
        held-out, so near-duplicates cannot leak.
    stratify : (N,) array-like, optional
        Stratum per row; default :func:`stratification_keys` (deepest positive node, rare strata
        merged upward). Falls back to unstratified folds when a stratum is smaller than ``n_splits``.
    fit_full : bool
        Fit the full model on all labelled rows (needed for unlabelled rows' probabilities).
    primary, candidates : optional
        Passed to :func:`~active_learning.core.metrics.evaluate` for leaf / top-level accuracy.

    Returns
    -------
    CVResult
    """
    h = as_hierarchy(parents)
    x = np.asarray(X)
    y = np.asarray(Y)
    n = x.shape[0]
    if y.shape != (n, h.n_nodes):
        raise ValueError(f"Y has shape {y.shape}; expected ({n}, {h.n_nodes})")
    if n_splits < 2:
        raise ValueError("n_splits must be at least 2")
    lab = (
        np.asarray(labeled_mask, dtype=bool)
        if labeled_mask is not None
        else np.nansum(np.where(np.isfinite(y), y, 0), axis=1) > 0
    )
    lab_idx = np.flatnonzero(lab)
    if lab_idx.size < n_splits:
        raise ValueError(f"{lab_idx.size} labelled rows cannot make {n_splits} folds")
    keys = (
        np.unique(np.asarray(stratify)[lab_idx], return_inverse=True)[1].astype(np.int64)
        if stratify is not None
        else stratification_keys(y[lab_idx], parents=h, min_count=n_splits)
    )
    g = None if groups is None else np.asarray(groups)[lab_idx]
    prim = None if primary is None else np.asarray(primary)

    out = np.full((n, h.n_nodes), np.nan, dtype=np.float64)
    fold = np.full(n, -1, dtype=np.int64)
    fold_metrics: list[dict[str, float]] = []
    t_start = time.perf_counter()
    for f, (tr, te) in enumerate(_splits(n_splits, seed, keys, g)):
        rows_tr, rows_te = lab_idx[tr], lab_idx[te]
        t0 = time.perf_counter()
        est = estimator_factory()
        est.fit(x[rows_tr], y[rows_tr])
        out[rows_te] = np.asarray(est.predict_proba(x[rows_te]), dtype=np.float64)
        fold[rows_te] = f
        m = evaluate(
            y[rows_te],
            out[rows_te],
            parents=h,
            primary=None if prim is None else prim[rows_te],
            candidates=candidates,
        )
        m["fit_s"] = time.perf_counter() - t0
        fold_metrics.append(m)
    t_folds = time.perf_counter() - t_start

    model = None
    t0 = time.perf_counter()
    if fit_full:
        model = estimator_factory()
        model.fit(x[lab_idx], y[lab_idx])
        unl = np.flatnonzero(~lab)
        if unl.size:
            out[unl] = np.asarray(model.predict_proba(x[unl]), dtype=np.float64)
    t_full = time.perf_counter() - t0

    pooled = evaluate(
        y[lab_idx],
        out[lab_idx],
        parents=h,
        primary=None if prim is None else prim[lab_idx],
        candidates=candidates,
    )
    return CVResult(
        pred_probs=out,
        out_of_sample=lab.copy(),
        fold=fold,
        fold_metrics=fold_metrics,
        metrics=pooled,
        model=model,
        timings={"folds_s": t_folds, "full_s": t_full, "total_s": t_folds + t_full},
    )
