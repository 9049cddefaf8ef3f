"""Paths through the taxonomy: decisions along them, closure and the most probable path down.

A label set is a set of root-to-node paths. Each node is a parent→child decision that is asked only
when its parent is on (a root's is always asked). These are the array helpers both science cores use
for that; shapes follow the glossary in :mod:`taxonomy.hierarchy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from taxonomy.hierarchy import Hierarchy

BoolArray = npt.NDArray[np.bool_]


def parent_values(values: npt.NDArray[Any], h: Hierarchy, *, root: Any) -> npt.NDArray[Any]:
    """(N, K) the value at each node's parent, ``root`` in the root columns.

    Parameters
    ----------
    values : (N, K) array
    h : Hierarchy
    root : scalar or (N, 1) array
        What a root's column holds (a root has no parent).

    Returns
    -------
    (N, K) array of ``values``' dtype, a new array.
    """
    has_parent = h.parents >= 0
    out = np.take(values, np.where(has_parent, h.parents, 0), axis=1)
    out[:, ~has_parent] = root
    return out


def decisions_made(on: BoolArray, h: Hierarchy) -> BoolArray:
    """(N, K) True where the parent→node decision is asked: at roots and below an "on" parent."""
    out: BoolArray = parent_values(np.asarray(on, dtype=bool), h, root=True)
    return out


def close_downward(on: BoolArray, h: Hierarchy) -> BoolArray:
    """(N, K) ``on`` with every node whose parent is off turned off (top-down closure)."""
    out = np.array(on, dtype=bool, copy=True)
    for d in range(1, h.max_depth + 1):  # a level at a time, parents settled before children
        cols = np.flatnonzero(h.depth == d)
        out[:, cols] &= np.take(out, h.parents[cols], axis=1)
    return out


def _children_table(h: Hierarchy) -> npt.NDArray[np.int64]:
    """(K, C) children of each node in index order, padded with -1 (C = most children, ≥ 1)."""
    c_max = max((len(c) for c in h.children), default=0)
    kids = np.full((h.n_nodes, max(c_max, 1)), -1, dtype=np.int64)
    for node, c in enumerate(h.children):
        kids[node, : len(c)] = c
    return kids


def most_probable_descent(
    start: npt.NDArray[np.int64],
    scores: npt.ArrayLike,
    h: Hierarchy,
    *,
    min_score: float | None = None,
) -> BoolArray:
    """(n, K) each start node, its ancestors, and the greedy most probable path below it.

    From each row's start node, repeatedly step to the child with the highest score (the lowest
    index among ties) until a leaf, or until the best child scores below ``min_score``.

    Parameters
    ----------
    start : (n,) int
        Node to descend from, per row.
    scores : (n, K) float
        What the descent maximises at each step: marginals, or conditionals ``P(child | parent)``.
    h : Hierarchy
    min_score : float, optional
        Stop where the best child scores below this; by default descend to a leaf.

    Returns
    -------
    (n, K) bool, ancestor-closed: one path per row.
    """
    s = np.asarray(scores)
    n = start.shape[0]
    out = h.ancestor_matrix[start].copy()
    kids = _children_table(h)
    rows = np.arange(n)
    cur = start.copy()
    for _ in range(h.max_depth):
        cand = kids[cur]  # (n, C)
        valid = cand >= 0
        if not valid.any():
            break
        masked = np.where(valid, s[rows[:, None], np.maximum(cand, 0)], -np.inf)
        best_col = np.argmax(masked, axis=1)
        go = valid.any(axis=1)
        if min_score is not None:
            go &= masked[rows, best_col] >= min_score
            if not go.any():
                break
        cur = np.where(go, cand[rows, best_col], cur)
        out[rows[go], cur[go]] = True
    return out


def most_probable_path(pred_probs: npt.ArrayLike, h: Hierarchy) -> BoolArray:
    """(N, K) the single most probable path per clip: the most probable root, then repeatedly its
    most probable child (by marginal), down to a leaf."""
    p = np.asarray(pred_probs)
    start = h.roots[np.argmax(p[:, h.roots], axis=1)]
    return most_probable_descent(start, p, h)
