"""Quality metrics for hierarchical multi-label predictions.

Conventions
-----------
``labels`` (N, K) {0, 1} ancestor-closed; ``pred_probs`` (N, K) hierarchy-consistent; ``parents`` (K,).

Predicted label sets (:func:`predicted_sets`) come in two flavours:

``"threshold"`` (default)
    every node whose marginal probability is at least ``threshold`` (0.5), then ancestor-closed
    (a no-op for consistent probabilities). Multi-label: secondary branches count.
``"path"``
    a single top-down argmax path: the most probable root, then repeatedly its most probable child,
    down to a leaf. Exactly one label path per clip.

Hierarchical precision / recall / F1 compare the ancestor-augmented predicted and true sets, micro-
averaged over clips (sums of set intersections and sizes over all clips), as in Kiritchenko et al.
Leaf and top-level accuracy compare against each clip's *primary* node (for example the
``primary_label`` column of the corpus): the predicted primary is the candidate node with the highest
marginal probability (the Bayes decision for that accuracy), and the predicted top level the candidate
root with the highest marginal.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import most_probable_path

__all__ = [
    "evaluate",
    "hierarchical_prf",
    "leaf_accuracy",
    "mean_average_precision",
    "per_depth_macro_f1",
    "per_node_report",
    "predicted_sets",
    "top_level_accuracy",
]

BoolArray = npt.NDArray[np.bool_]


def predicted_sets(
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    mode: Literal["threshold", "path"] = "threshold",
    threshold: float = 0.5,
) -> BoolArray:
    """Predicted, ancestor-closed label sets.

    Parameters
    ----------
    pred_probs : (N, K) float
    parents : (K,) int or Hierarchy
    mode : {"threshold", "path"}
        See the module docstring.
    threshold : float
        Marginal probability cut-off for ``"threshold"``.

    Returns
    -------
    (N, K) bool, ancestor-closed.
    """
    h = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    if mode == "threshold":
        return h.ancestor_close(p >= threshold).astype(bool)
    if mode != "path":
        raise ValueError(f"unknown mode {mode!r}")
    return most_probable_path(p, h)


def hierarchical_prf(labels: npt.ArrayLike, predicted: npt.ArrayLike) -> tuple[float, float, float]:
    """Micro hierarchical precision, recall and F1 over ancestor-augmented sets.

    Parameters
    ----------
    labels, predicted : (N, K) {0, 1}
        Ancestor-closed true and predicted sets.

    Returns
    -------
    (hP, hR, hF1); 0.0 where a denominator is empty.
    """
    y = np.asarray(labels) > 0
    s = np.asarray(predicted) > 0
    inter = float(np.sum(y & s))
    n_pred = float(s.sum())
    n_true = float(y.sum())
    prec = inter / n_pred if n_pred else 0.0
    rec = inter / n_true if n_true else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def _f1_per_node(y: BoolArray, s: BoolArray) -> npt.NDArray[np.float64]:
    tp = np.sum(y & s, axis=0).astype(np.float64)
    fp = np.sum(~y & s, axis=0)
    fn = np.sum(y & ~s, axis=0)
    denom = 2 * tp + fp + fn
    f1: npt.NDArray[np.float64] = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1


def per_depth_macro_f1(
    labels: npt.ArrayLike, predicted: npt.ArrayLike, *, parents: npt.ArrayLike | Hierarchy
) -> dict[int, float]:
    """Macro F1 over the nodes of each depth that have at least one true positive.

    Returns
    -------
    dict depth -> macro F1 (depths with no positive node are left out).
    """
    h = as_hierarchy(parents)
    y = np.asarray(labels) > 0
    s = np.asarray(predicted) > 0
    f1 = _f1_per_node(y, s)
    has_pos = y.any(axis=0)
    out: dict[int, float] = {}
    for d in range(h.max_depth + 1):
        nodes = (h.depth == d) & has_pos
        if nodes.any():
            out[d] = float(f1[nodes].mean())
    return out


def _candidates(h: Hierarchy, candidates: npt.ArrayLike | None) -> npt.NDArray[np.int64]:
    if candidates is None:
        return np.flatnonzero(h.is_leaf).astype(np.int64)
    c = np.asarray(candidates)
    return (np.flatnonzero(c) if c.dtype == bool else c).astype(np.int64)


def leaf_accuracy(
    pred_probs: npt.ArrayLike,
    primary: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    candidates: npt.ArrayLike | None = None,
) -> float:
    """Accuracy of the primary node: argmax of the marginal over candidate nodes.

    Parameters
    ----------
    pred_probs : (N, K) float
    primary : (N,) int
        True primary node per clip (usually a leaf).
    candidates : (C,) int or (K,) bool, optional
        Nodes that can be primary; default every leaf.
    """
    h = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    cand = _candidates(h, candidates)
    pred = cand[np.argmax(p[:, cand], axis=1)]
    return float(np.mean(pred == np.asarray(primary)))


def top_level_accuracy(
    pred_probs: npt.ArrayLike,
    primary: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    candidates: npt.ArrayLike | None = None,
) -> float:
    """Accuracy of the primary node's root: argmax marginal over the candidates' roots.

    ``candidates`` as in :func:`leaf_accuracy`; their roots are the choices (so a secondary-only
    branch such as "Regional tradition" is never the predicted top level).
    """
    h = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    roots = np.unique(h.top_level[_candidates(h, candidates)])
    pred = roots[np.argmax(p[:, roots], axis=1)]
    return float(np.mean(pred == h.top_level[np.asarray(primary)]))


def mean_average_precision(labels: npt.ArrayLike, pred_probs: npt.ArrayLike) -> float:
    """Macro average precision over the nodes with at least one positive (NaN if none).

    Average precision per node is the step-wise area under its precision-recall curve (as
    ``sklearn.metrics.average_precision_score``); ties in scores are grouped.
    """
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels) > 0
    p = np.asarray(pred_probs, dtype=np.float64)
    cols = np.flatnonzero(y.any(axis=0))
    if cols.size == 0:
        return float("nan")
    return float(np.mean([average_precision_score(y[:, k], p[:, k]) for k in cols.tolist()]))


def per_node_report(
    labels: npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    threshold: float = 0.5,
) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
    """What the model tells apart, node by node: detection quality and sibling confusions.

    Parameters
    ----------
    labels : (N, K) {0, 1}
        Ancestor-closed true sets.
    pred_probs : (N, K) float
        Hierarchy-consistent (out-of-sample) probabilities.
    parents : (K,) int or Hierarchy
    threshold : float
        For the predicted sets behind precision / recall / F1 (see :func:`predicted_sets`).

    Returns
    -------
    dict of (K,) arrays:

    ``support`` (int)
        Rows with the node on.
    ``precision``, ``recall``, ``f1``
        Of the thresholded predicted sets (0 where undefined).
    ``ap``
        Average precision of the node's marginal over all rows (NaN without a positive, or when
        every row is positive).
    ``sibling_accuracy``
        Among rows with the node on and exactly one of its siblings-or-itself on (so the choice
        among siblings is well defined), the share where the node has the highest marginal of its
        sibling group: how well the model picks this genre over its siblings (NaN without rows, or
        for a node with no sibling).
    ``sibling_chance``
        1 / (number of siblings + 1): what guessing scores on ``sibling_accuracy``.
    ``confused_with`` (int)
        The sibling most often ranked first instead of the node on those rows (-1 if never).
    ``confused_rate``
        The share of those rows that went to ``confused_with``.

    Roots count as siblings of each other.
    """
    h = as_hierarchy(parents)
    y = np.asarray(labels) > 0
    p = np.asarray(pred_probs, dtype=np.float64)
    k = h.n_nodes
    s = predicted_sets(p, parents=h, threshold=threshold)
    tp = np.sum(y & s, axis=0).astype(np.float64)
    n_pred = s.sum(axis=0).astype(np.float64)
    support = y.sum(axis=0).astype(np.int64)
    precision = np.divide(tp, n_pred, out=np.zeros(k), where=n_pred > 0)
    recall = np.divide(tp, support.astype(np.float64), out=np.zeros(k), where=support > 0)
    f1 = _f1_per_node(y, s)

    from sklearn.metrics import average_precision_score

    ap = np.full(k, np.nan)
    for j in np.flatnonzero((support > 0) & (support < y.shape[0])).tolist():
        ap[j] = average_precision_score(y[:, j], p[:, j])

    sib_acc = np.full(k, np.nan)
    chance = np.full(k, np.nan)
    confused = np.full(k, -1, dtype=np.int64)
    confused_rate = np.zeros(k)
    groups = [h.roots, *(c for c in h.children if c.size)]
    for group in groups:
        if group.size < 2:
            continue
        on = y[:, group]
        single = on.sum(axis=1) == 1  # rows where exactly one member of the group is true
        winner = group[np.argmax(p[:, group], axis=1)]
        for pos, node in enumerate(group.tolist()):
            rows = single & on[:, pos]
            chance[node] = 1.0 / group.size
            if not rows.any():
                continue
            won = winner[rows]
            sib_acc[node] = float(np.mean(won == node))
            others, counts = np.unique(won[won != node], return_counts=True)
            if others.size:
                best = int(np.argmax(counts))
                confused[node] = int(others[best])
                confused_rate[node] = float(counts[best] / rows.sum())
    return {
        "support": support,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ap": ap,
        "sibling_accuracy": sib_acc,
        "sibling_chance": chance,
        "confused_with": confused,
        "confused_rate": confused_rate,
    }


def evaluate(
    labels: npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    primary: npt.ArrayLike | None = None,
    candidates: npt.ArrayLike | None = None,
    mode: Literal["threshold", "path"] = "threshold",
    threshold: float = 0.5,
) -> dict[str, float]:
    """All metrics in one flat dict (JSON-ready).

    Parameters
    ----------
    labels : (N, K) {0, 1}
    pred_probs : (N, K) float
    parents : (K,) int or Hierarchy
    primary : (N,) int, optional
        True primary node per clip; enables ``leaf_accuracy`` and ``top_level_accuracy``.
    candidates : optional
        Nodes that can be primary (see :func:`leaf_accuracy`).
    mode, threshold
        How predicted sets are formed (see :func:`predicted_sets`).

    Returns
    -------
    dict with ``hier_precision``, ``hier_recall``, ``hier_f1``, ``macro_f1_depth_<d>``, ``mAP``,
    ``n``, and with ``primary``: ``leaf_accuracy``, ``top_level_accuracy``.
    """
    h = as_hierarchy(parents)
    y = np.asarray(labels) > 0
    s = predicted_sets(pred_probs, parents=h, mode=mode, threshold=threshold)
    hp, hr, hf = hierarchical_prf(y, s)
    out: dict[str, float] = {
        "n": float(y.shape[0]),
        "hier_precision": hp,
        "hier_recall": hr,
        "hier_f1": hf,
        "mAP": mean_average_precision(y, pred_probs),
    }
    for d, f in per_depth_macro_f1(y, s, parents=h).items():
        out[f"macro_f1_depth_{d}"] = f
    if primary is not None:
        out["leaf_accuracy"] = leaf_accuracy(pred_probs, primary, parents=h, candidates=candidates)
        out["top_level_accuracy"] = top_level_accuracy(
            pred_probs, primary, parents=h, candidates=candidates
        )
    return out
