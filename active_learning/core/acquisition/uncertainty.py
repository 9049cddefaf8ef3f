"""Hierarchical uncertainty: per-decision uncertainty pooled over depths, and the model's
confidence in its own label set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import (
    ColdStart,
    FloatArray,
    IntArray,
    Measure,
    Pool,
    check_request,
    top_n,
)
from active_learning.core.acquisition.diversity import diversity_pick
from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import close_downward, decisions_made
from taxonomy.pooling import worst_decision_ema


def _xlogx(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``x · ln x`` elementwise with ``0 · ln 0 = 0`` (x in [0, 1]); one log, no clipped copy."""
    out = np.maximum(x, np.float32(1e-30))
    np.log(out, out=out)
    out *= x
    return out


def _weighted_binary_entropy(
    q: npt.NDArray[np.float32], w: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """(N, K) ``w · H(q)`` in bits, float32, computed in place where possible."""
    r = np.subtract(np.float32(1.0), q)
    h = _xlogx(q)
    h += _xlogx(r)
    h *= np.float32(-1.0 / np.log(2.0))
    h *= w
    return h


def _depth_pool(
    values: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    depth: IntArray,
    n_depths: int,
    how: Pool,
) -> FloatArray:
    """(N, n_depths): ``values`` (already multiplied by ``weights``) pooled per depth.

    ``sum`` and ``mean`` are one matrix product with the (K, n_depths) depth indicator; ``max``
    takes the column blocks of each depth. A depth with no column pools to 0.
    """
    n = values.shape[0]
    if how not in ("sum", "mean", "max"):
        raise ValueError(f"unknown pooling {how!r}; use 'sum', 'mean' or 'max'")
    if how == "max":
        out = np.zeros((n, n_depths))
        for d in range(n_depths):
            cols = np.flatnonzero(depth == d)
            if cols.size:
                out[:, d] = np.take(values, cols, axis=1).max(axis=1)
        return out
    onehot = np.zeros((values.shape[1], n_depths), dtype=values.dtype)
    onehot[np.arange(depth.size), depth] = 1.0
    pooled = (values @ onehot).astype(np.float64)
    if how == "mean":
        pooled /= np.maximum((weights @ onehot).astype(np.float64), 1e-12)
    return pooled


def _pool(values: FloatArray, weights: FloatArray, how: Pool, axis: int = 1) -> FloatArray:
    if values.shape[axis] == 0:
        return np.zeros(values.shape[1 - axis])
    pooled: FloatArray
    if how == "sum":
        pooled = np.sum(values * weights, axis=axis)
        return pooled
    if how == "max":
        pooled = np.max(values * weights, axis=axis)
        return pooled
    if how == "mean":
        denom = np.sum(weights, axis=axis)
        pooled = np.sum(values * weights, axis=axis) / np.maximum(denom, 1e-12)
        return pooled
    raise ValueError(f"unknown pooling {how!r}; use 'sum', 'mean' or 'max'")


def hierarchical_uncertainty(
    pred_probs: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    *,
    measure: Measure = "entropy",
    within_depth: Pool = "sum",
    across_depths: Pool = "sum",
) -> FloatArray:
    """Per-clip uncertainty of hierarchy-consistent probabilities, pooled over decisions and depths.

    Parameters
    ----------
    pred_probs : (N, K) array-like
        Hierarchy-consistent probabilities.
    parents : (K,) array-like or Hierarchy
    measure : {"entropy", "margin", "least_confidence"}
        Per-decision uncertainty in [0, 1]. ``"entropy"``: binary entropy (bits) of each
        parent→child decision ``q = P(k | parent)``. ``"least_confidence"``: ``2·min(q, 1 - q)``.
        ``"margin"``: per sibling group (children of one parent, or the roots), ``1 - (top1 - top2)``
        of the children's conditionals; a lone child is compared with ``1 - q``. Margin assumes
        siblings compete (one primary child), entropy does not.
    within_depth : {"sum", "mean", "max"}
        How the decisions of one depth are pooled; each decision is weighted by ``P(parent)`` (its
        chance of being asked at all). ``"mean"`` is the ``P(parent)``-weighted mean.
    across_depths : {"sum", "mean", "max"}
        How the per-depth scores are pooled (unweighted). The default ``sum``/``sum`` of entropy is
        the entropy of the whole label set under the chain-rule factorisation.

    Returns
    -------
    (N,) float64
        Larger is more uncertain.
    """
    hier = as_hierarchy(parents)
    if within_depth not in ("sum", "mean", "max") or across_depths not in ("sum", "mean", "max"):
        raise ValueError(
            f"unknown pooling {within_depth!r}/{across_depths!r}; use 'sum', 'mean' or 'max'"
        )
    # float32 throughout (scores only rank clips); per-depth pooling is a matrix product.
    q, w = hier.decision_probabilities(pred_probs, dtype=np.float32)
    n_depths = hier.max_depth + 1
    if measure in ("entropy", "least_confidence"):
        if measure == "entropy":
            u = _weighted_binary_entropy(q, w)
        else:
            u = np.subtract(np.float32(1.0), q)
            np.minimum(u, q, out=u)
            u *= np.float32(2.0)
            u *= w
        per_depth = _depth_pool(u, w, hier.depth, n_depths, within_depth)
    elif measure == "margin":
        groups = [hier.roots] + [c for c in hier.children if c.size]
        # A node-major copy of q, so each decision is a contiguous row; top-2 by running max.
        qt = np.ascontiguousarray(q.T)
        group_u = np.empty((len(groups), q.shape[0]), dtype=np.float32)
        for g, kids in enumerate(groups):
            if kids.size == 1:
                top1 = np.maximum(qt[kids[0]], np.float32(1.0) - qt[kids[0]])
                group_u[g] = np.float32(2.0) - np.float32(2.0) * top1  # 1 - (top1 - (1 - top1))
                continue
            top1 = np.maximum(qt[kids[0]], qt[kids[1]])
            top2 = np.minimum(qt[kids[0]], qt[kids[1]])
            for k in kids[2:]:
                np.maximum(top2, np.minimum(top1, qt[k]), out=top2)
                np.maximum(top1, qt[k], out=top1)
            top1 -= top2
            group_u[g] = np.float32(1.0) - top1
        first = np.array([kids[0] for kids in groups], dtype=np.int64)
        group_w = np.take(w, first, axis=1)
        group_d = hier.depth[first]
        weighted = np.ascontiguousarray(group_u.T)
        weighted *= group_w
        per_depth = _depth_pool(weighted, group_w, group_d, n_depths, within_depth)
    else:
        raise ValueError(f"unknown measure {measure!r}")
    return _pool(per_depth, np.ones_like(per_depth), across_depths)


def decision_confidence(
    pred_probs: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    *,
    pooling: Literal["ema", "mean"] = "ema",
    alpha: float = 0.8,
) -> FloatArray:
    """Model confidence in its own label set, per clip, on the per-decision probability scale.

    The model's own label set is built top-down (a node is on when ``P(k | parent) >= 0.5`` and its
    parent is on); each parent->child decision scores its self-confidence ``max(q, 1 - q)``.

    Parameters
    ----------
    pred_probs : (N, K) array-like
    parents : (K,) array-like or Hierarchy
    pooling : {"ema", "mean"}
        ``"ema"`` (default): the score :func:`quality.core.label_issues.label_quality_scores` gives
        the model's own label set (decisions not taken score 1; exponential moving average of the
        12 worst decisions, worst weighing ``alpha``), i.e. the same scale as
        ``quality.core.consensus.get_consensus(...).consensus_quality``. This is the hierarchical
        analogue of ActiveLab's ``max(pred_probs)`` for unlabelled clips.
        ``"mean"``: the ``P(parent)``-weighted mean of ``max(q, 1 - q)`` over every decision.
    alpha : float
        EMA weight of the worst decision.

    Returns
    -------
    (N,) float64
        In [0.5, 1]; 0.5 is chance.
    """
    hier = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    q, w = hier.decision_probabilities(p)
    if pooling == "mean":
        return _pool(np.maximum(q, 1.0 - q), w, "mean")
    if pooling != "ema":
        raise ValueError(f"unknown pooling {pooling!r}; use 'ema' or 'mean'")
    on = q >= 0.5
    # In place from here (w is not needed): each fresh (N, K) float64 array costs page faults.
    selfconf = np.maximum(q, np.subtract(1.0, q, out=w), out=q)
    active = decisions_made(close_downward(on, hier), hier)  # of the model's own label set
    scores = selfconf
    np.copyto(scores, 1.0, where=~active)
    # The (N, K) scores are not needed afterwards: partition them in place.
    return worst_decision_ema(scores, alpha=alpha, overwrite=True)


@dataclass
class HierarchicalUncertainty:
    """Most uncertain unlabelled clips first (see :func:`hierarchical_uncertainty`).

    Parameters
    ----------
    measure, within_depth, across_depths
        As in :func:`hierarchical_uncertainty`.
    cold_start : {"kmeans++", "kcenter"}
        Diversity method used while ``pred_probs`` is None.
    """

    measure: Measure = "entropy"
    within_depth: Pool = "sum"
    across_depths: Pool = "sum"
    cold_start: ColdStart = "kmeans++"
    name: ClassVar[str] = "uncertainty"

    def scores(self, pred_probs: npt.ArrayLike, parents: npt.ArrayLike | Hierarchy) -> FloatArray:
        """(N,) uncertainty, larger first."""
        return hierarchical_uncertainty(
            pred_probs,
            parents,
            measure=self.measure,
            within_depth=self.within_depth,
            across_depths=self.across_depths,
        )

    def select(
        self,
        *,
        pred_probs: npt.ArrayLike | None,
        embeddings: npt.ArrayLike,
        labeled: npt.ArrayLike,
        n: int,
        parents: npt.ArrayLike | Hierarchy,
        consensus_quality: npt.ArrayLike | None = None,
        n_annotations: npt.ArrayLike | None = None,
        rng: np.random.Generator | None = None,
    ) -> IntArray:
        req = check_request(
            pred_probs=pred_probs, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        cand = np.flatnonzero(~req.labeled)
        if req.pred_probs is None:
            return diversity_pick(req, cand, self.cold_start, rng)
        return top_n(self.scores(req.pred_probs, req.hierarchy), cand, req.n, rng)
