"""Greedy k-center (core-set) selection, pruned by distance bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import FloatArray, IntArray
from active_learning.core.acquisition.distance import BLAS, Space, euclidean_space, group_bound


def _with_centres(centres: IntArray | None, recent: Sequence[int]) -> IntArray:
    """Rows to measure a candidate against: ``centres`` (if any) and the ``recent`` picks."""
    rec = np.asarray(recent, dtype=np.int64)
    return rec if centres is None else np.concatenate([centres, rec])


def farthest_first(
    space: Space,
    dist: FloatArray,
    n: int,
    first: Sequence[int] = (),
    centres: IntArray | None = None,
) -> IntArray:
    """Greedy k-center over ``space``: ``n`` candidate rows (``first`` included), in pick order.

    ``dist`` (C,) is each candidate's squared distance to the centres so far (labelled clips and
    ``first``); with ``centres`` given it is only an upper bound (:func:`centre_bound`) and the
    exact distance is computed against ``centres`` where needed. Distances only shrink as picks are
    added, so ``dist`` bounds every later one: candidates are visited in decreasing ``dist`` and
    only a prefix of them (the *active* set) is kept exact and up to date, one small matrix-vector
    product per pick. The farthest active candidate is the farthest of all when it beats the
    ``dist`` of the first candidate outside the prefix; otherwise the prefix doubles. Same picks as
    updating all C distances after every pick (ties go to the lowest index), at a fraction of the
    passes over the embeddings.
    """
    picks = [int(j) for j in first]
    n_pts, since = space.n, len(picks)
    base = np.array(dist, dtype=np.float64)
    base[picks] = -np.inf

    def exact(rows: IntArray) -> FloatArray:
        d = base[rows]
        cols = _with_centres(centres, picks[since:])
        if cols.size:
            np.minimum(d, space.min_to(cols, rows=rows), out=d)
        return d

    order = np.argsort(-base, kind="stable")
    m = min(n_pts, max(8 * n, 1024))
    active = np.sort(order[:m])
    d_act = exact(active)
    sub = space.subset(active)  # contiguous rows: each pick's update is one matrix-vector product
    bound = base[order[m]] if m < n_pts else -np.inf
    while len(picks) < n:
        k = int(np.argmax(d_act))
        while m < n_pts and d_act[k] <= bound:  # someone outside the prefix may be as far: widen
            m_new = min(n_pts, 2 * m)
            if centres is not None and m_new > n_pts // 4:
                # The bound is too loose to prune: measure everyone exactly once and go on.
                full = exact(np.arange(n_pts))
                return farthest_first(space, full, n, picks)
            new = order[m:m_new]
            active = np.concatenate([active, new])
            d_act = np.concatenate([d_act, exact(new)])
            by_index = np.argsort(active, kind="stable")
            active, d_act = active[by_index], d_act[by_index]
            sub = space.subset(active)
            bound = base[order[m_new]] if m_new < n_pts else -np.inf
            m = m_new
            k = int(np.argmax(d_act))
        j = int(active[k])
        picks.append(j)
        if len(picks) < n:
            with BLAS.limit(limits=1, user_api="blas"):  # one column
                np.minimum(d_act, sub.min_to(np.array([k])), out=d_act)
        d_act[k] = -np.inf
    return np.asarray(picks, dtype=np.int64)


def k_center_greedy(
    embeddings: npt.ArrayLike,
    *,
    candidates: npt.ArrayLike,
    centres: npt.ArrayLike,
    n: int,
) -> IntArray:
    """Greedy k-center (core-set) selection: repeatedly take the candidate farthest from all centres.

    Parameters
    ----------
    embeddings : (N, D) array-like
    candidates : (C,) int
        Indices that may be chosen.
    centres : (L,) int
        Indices already covered (labelled clips). If empty, the first pick is the candidate
        nearest the candidates' mean (deterministic, no outlier first).
    n : int
        Number to choose, ``n <= C``.

    Returns
    -------
    (n,) int64
        Indices into [0, N) in pick order.

    Notes
    -----
    Exact greedy order (float32 distances), computed by pruning: see :func:`farthest_first`.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    cent = np.asarray(centres, dtype=np.int64)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    space = euclidean_space(embeddings, cand, cent)
    first: tuple[int, ...] = ()
    loose: IntArray | None = None
    if cent.size:
        dist, loose = group_bound(space, cand.size + np.arange(cent.size))
    else:
        first = (int(np.argmin(space.sq[: cand.size])),)  # x is centred on the candidates' mean
        dist = space.min_to(np.asarray(first))
    return cand[farthest_first(space, dist, n, first, loose)]
