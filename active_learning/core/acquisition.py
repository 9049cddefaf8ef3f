"""Acquisition strategies: which clips the next annotations are best spent on.

Every strategy implements one keyword-only signature (after small-text's ``QueryStrategy``) and
returns **ranked indices into the whole dataset, most valuable first**. Plain strategies rank only
unlabelled clips; :class:`RelabelOrNew` ranks labelled and unlabelled clips on one scale so that a
single sort decides between a new label and a second opinion.

Glossary
--------
N clips (labelled and unlabelled together), K taxonomy nodes, D embedding dimensions.

``pred_probs`` : (N, K) float or None
    Hierarchy-consistent model probabilities for every clip (out-of-sample for labelled clips when
    :class:`RelabelOrNew` uses them). ``None`` before the first model exists: the **cold start**.
``embeddings`` : (N, D) float
    Cached clip embeddings; Euclidean distance should mean something (standardise them first).
``labeled`` : (N,) bool mask, or an int array of labelled indices.
``parents`` : (K,) int, or a :class:`~taxonomy.hierarchy.Hierarchy`.
``consensus_quality`` : (N,) float in [0, 1], NaN (or anything) for unlabelled clips
    Quality of each labelled clip's current consensus label set, on the same per-decision
    probability scale as :func:`decision_confidence` (see :class:`RelabelOrNew`).
``n_annotations`` : (N,) int
    Annotations received so far per clip (0 for unlabelled clips).

Cold start
----------
When ``pred_probs`` is None every model-based strategy (uncertainty, BADGE-like, relabel-or-new)
falls back to k-means++ seeding over the embeddings (``cold_start="kcenter"`` picks k-center greedy
instead), with the labelled clips as already-chosen centres. :class:`RelabelOrNew` then returns new
clips only: without a model there is nothing to weigh a second opinion against.

Hierarchical decisions
----------------------
A label set over a tree is a sequence of parent→child decisions. With ``q = P(child | parent)``
(:meth:`Hierarchy.conditional`) and ``w = P(parent)`` (1 for roots), the decision for node k is
"is k on, given its parent is on", and it matters for a clip in proportion to ``w``. Summing
``w · H(q)`` over all nodes is, by the chain rule, the entropy of the whole label set under the
model's conditional-independence factorisation; the pooling options below generalise that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import close_downward, decisions_made, parent_values
from taxonomy.pooling import worst_decision_ema

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Measure = Literal["entropy", "margin", "least_confidence"]
Pool = Literal["sum", "mean", "max"]
ColdStart = Literal["kmeans++", "kcenter"]

__all__ = [
    "AcquisitionError",
    "AcquisitionStrategy",
    "BadgeLike",
    "DiversitySampling",
    "EmptyPoolError",
    "HierarchicalUncertainty",
    "PoolSizeError",
    "RandomSampling",
    "RelabelOrNew",
    "RelabelOrNewSelection",
    "activelab_scores",
    "available_strategies",
    "decision_confidence",
    "get_strategy",
    "hierarchical_uncertainty",
    "k_center_greedy",
    "kmeans_pp_seeding",
    "relabel_gain",
    "vote_posterior",
]


# --------------------------------------------------------------------------------------------------
# Errors and the interface
# --------------------------------------------------------------------------------------------------


class AcquisitionError(ValueError):
    """An acquisition request that cannot be served."""


class EmptyPoolError(AcquisitionError):
    """There is no candidate clip at all (everything labelled, or an empty dataset)."""


class PoolSizeError(AcquisitionError):
    """More clips were asked for than there are candidates (or a negative number)."""


@runtime_checkable
class AcquisitionStrategy(Protocol):
    """One signature for every strategy; returns (n,) int64 ranked indices into [0, N)."""

    name: str

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
    ) -> IntArray: ...


@dataclass(frozen=True)
class _Request:
    pred_probs: FloatArray | None
    embeddings: npt.NDArray[np.floating]
    labeled: BoolArray
    hierarchy: Hierarchy
    n: int


def _as_mask(labeled: npt.ArrayLike, n_clips: int) -> BoolArray:
    lab = np.asarray(labeled)
    if lab.dtype == np.bool_:
        if lab.shape != (n_clips,):
            raise ValueError(f"labeled mask has shape {lab.shape}, expected ({n_clips},)")
        return lab
    idx = lab.astype(np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n_clips):
        raise ValueError("labeled index out of range")
    mask = np.zeros(n_clips, dtype=bool)
    mask[idx] = True
    return mask


def _check_request(
    *,
    pred_probs: npt.ArrayLike | None,
    embeddings: npt.ArrayLike,
    labeled: npt.ArrayLike,
    n: int,
    parents: npt.ArrayLike | Hierarchy,
    n_candidates: Callable[[BoolArray], int] | None = None,
) -> _Request:
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)
    n_clips = emb.shape[0]
    hier = as_hierarchy(parents)
    probs: FloatArray | None = None
    if pred_probs is not None:
        probs = np.asarray(pred_probs, dtype=np.float64)
        if probs.shape != (n_clips, hier.n_nodes):
            raise ValueError(
                f"pred_probs has shape {probs.shape}, expected ({n_clips}, {hier.n_nodes})"
            )
    mask = _as_mask(labeled, n_clips)
    if n < 0:
        raise PoolSizeError(f"n must be >= 0, got {n}")
    available = int((~mask).sum()) if n_candidates is None else n_candidates(mask)
    if n > 0 and available == 0:
        raise EmptyPoolError("no candidate clips: the pool is empty or fully labelled")
    if n > available:
        raise PoolSizeError(f"asked for {n} clips but only {available} candidates remain")
    return _Request(probs, emb, mask, hier, int(n))


def _top_n(
    scores: FloatArray, candidates: IntArray, n: int, rng: np.random.Generator | None
) -> IntArray:
    """Candidates ranked by descending score; ties broken by ``rng`` if given, else by index."""
    s = scores[candidates]
    if rng is not None:
        perm = rng.permutation(candidates.size)
        candidates, s = candidates[perm], s[perm]
    if n < candidates.size:
        part = np.argpartition(-s, n - 1)[:n]
        # argpartition is not stable: re-sort the chosen block, keeping index order for ties.
        part = part[np.lexsort((part, -s[part]))]
    else:
        part = np.lexsort((np.arange(candidates.size), -s))
    ranked: IntArray = candidates[part].astype(np.int64)
    return ranked


# --------------------------------------------------------------------------------------------------
# Hierarchical uncertainty
# --------------------------------------------------------------------------------------------------


def _decisions(
    pred_probs: npt.ArrayLike, hier: Hierarchy, dtype: type[np.floating[Any]] = np.float64
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(N, K) conditional ``q = P(k | parent)`` and (N, K) reach weight ``w = P(parent)``.

    Same arithmetic as :meth:`Hierarchy.conditional` (bit-for-bit in float64), without its (N, K)
    fancy-index temporaries: one column gather (``np.take``) and in-place division and clipping.
    ``dtype=np.float32`` halves the memory traffic for the acquisition scores.
    """
    p = np.asarray(pred_probs, dtype=dtype)
    w = parent_values(p, hier, root=1.0)
    q = np.maximum(w, 1e-12)
    np.divide(p, q, out=q)
    np.clip(q, 0.0, 1.0, out=q)
    np.clip(w, 0.0, 1.0, out=w)
    return q, w


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
    q, w = _decisions(pred_probs, hier, np.float32)
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
    q, w = _decisions(p, hier)
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


# --------------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------------


_BLOCK_ELEMS = 1 << 23  # (rows, cols) float32 temporary per matrix product: 32 MB
# Runs of small products (one row, or a few hundred) use one BLAS thread: threads that synchronise
# on every small product cost ~5x more on a busy 2-core machine (measured on the acq_speed pool).
_BLAS = ThreadpoolController()


def _row_blocks(n_rows: int, n_cols: int) -> range:
    """Block starts: as few products as the temporary allows (each one syncs the BLAS threads)."""
    return range(0, n_rows, max(1024, _BLOCK_ELEMS // max(n_cols, 1)))


# Labelled clips measured against every candidate before k-means++ starts, when there are more than
# twice as many: a farthest-first cover whose distances bound the exact ones (:func:`_centre_bound`).
# k-means++ needs only a loose bound (it rejects ~25 % of proposals at 64 on the acq_speed pool, ~33 %
# with 10k labelled clips).
_KMEANSPP_COVER = 64
# k-center prunes by its bound, so it wants a tight one (:func:`_group_bound`): above this many
# labelled clips each candidate is measured against the labelled clips of its nearest group only.
_KCENTER_EXACT = 256
_LLOYD_STEPS = 2  # moves of the group means before the labelled clips are split among them


class _Space(Protocol):
    """Squared distances among ``n`` candidate rows (and extra rows, e.g. labelled centres)."""

    n: int

    def min_to(self, cols: IntArray, rows: IntArray | None = None) -> FloatArray:
        """(len(rows),) squared distance from each row (all candidates if None) to its nearest col."""
        ...

    def subset(self, rows: IntArray) -> _Space:
        """The same space over ``rows`` only (contiguous copies), renumbered ``0..len(rows)-1``."""
        ...


class _Euclidean:
    """Squared Euclidean distances, ``|x|² - 2 x·y + |y|²`` with float32 matrix products.

    ``x`` (float32, owned: centred in place on the mean of its first ``n`` rows, which keeps the
    expansion accurate when embeddings share a large offset; distances do not change).
    """

    def __init__(self, x: npt.NDArray[np.float32], n: int, *, centre: bool = True) -> None:
        if n and centre:
            x -= x[:n].mean(axis=0, dtype=np.float64).astype(np.float32)
        self.x = x
        self.sq: FloatArray = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        self.n = n

    def subset(self, rows: IntArray) -> _Euclidean:
        return _Euclidean(self.x[rows], rows.size, centre=False)

    def prepare(self, cols: IntArray) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The column side of :meth:`min_to` (``-2·x[cols]`` and ``|x[cols]|²``), to reuse it."""
        return self.x[cols] * np.float32(-2.0), self.sq[cols].astype(np.float32)

    def min_to(
        self,
        cols: IntArray,
        rows: IntArray | None = None,
        *,
        prepared: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None,
    ) -> FloatArray:
        # -2·c is an exact scaling: the product is -2 x·c. ``prepared`` is :meth:`prepare` of cols.
        c, c_sq = self.prepare(cols) if prepared is None else prepared
        n_rows = self.n if rows is None else rows.size
        out = np.empty(n_rows)
        blocks = _row_blocks(n_rows, cols.size)
        for start in blocks:
            stop = min(start + blocks.step, n_rows)
            idx = slice(start, stop) if rows is None else rows[start:stop]
            cross = self.x[idx] @ c.T
            cross += c_sq
            out[start:stop] = cross.min(axis=1)
        out += self.sq[: self.n] if rows is None else self.sq[rows]
        min_sq: FloatArray = np.maximum(out, 0.0)
        return min_sq


class _Gradient:
    """BADGE gradient space: ``|a_i ⊗ h_i - a_j ⊗ h_j|² = |a_i|²|h_i|² + |a_j|²|h_j|² - 2 (a_i·a_j)(h_i·h_j)``."""

    def __init__(self, a: npt.NDArray[np.float32], h: npt.NDArray[np.float32]) -> None:
        self.a, self.h = a, h
        self.sq: FloatArray = np.einsum("ij,ij->i", a, a, dtype=np.float64) * np.einsum(
            "ij,ij->i", h, h, dtype=np.float64
        )
        self.n = a.shape[0]

    def subset(self, rows: IntArray) -> _Gradient:
        return _Gradient(self.a[rows], self.h[rows])

    def min_to(self, cols: IntArray, rows: IntArray | None = None) -> FloatArray:
        ac, hc = self.a[cols] * np.float32(-2.0), self.h[cols]
        c_sq = self.sq[cols].astype(np.float32)
        n_rows = self.n if rows is None else rows.size
        out = np.empty(n_rows)
        blocks = _row_blocks(n_rows, cols.size)
        for start in blocks:
            stop = min(start + blocks.step, n_rows)
            idx = slice(start, stop) if rows is None else rows[start:stop]
            cross = self.a[idx] @ ac.T  # -2 (a_i·a_j)
            cross *= self.h[idx] @ hc.T
            cross += c_sq
            out[start:stop] = cross.min(axis=1)
        out += self.sq[: self.n] if rows is None else self.sq[rows]
        min_sq: FloatArray = np.maximum(out, 0.0)
        return min_sq


def _euclidean_space(
    embeddings: npt.ArrayLike, candidates: IntArray, centres: IntArray
) -> _Euclidean:
    """Candidates first (rows ``0..C-1``), then the centres (rows ``C..C+L-1``), as float32."""
    emb = np.asarray(embeddings)
    x = emb[np.concatenate([candidates, centres])].astype(np.float32, copy=False)
    return _Euclidean(x, candidates.size)


def _centre_bound(
    space: _Euclidean, centres: IntArray, cover: int
) -> tuple[FloatArray, IntArray | None]:
    """(C,) squared distance from each candidate to its nearest centre, or a cheap upper bound on it.

    ``centres`` are rows of ``space``. Up to ``2·cover`` centres the distance is exact (returned with
    None). Beyond that, only a farthest-first cover of ``cover`` centres is measured against all C
    candidates, an upper bound that the samplers below refine, against every centre (returned with
    the bound), for the few candidates they look at.
    """
    if centres.size <= 2 * cover:
        return space.min_to(centres), None
    sub = _Euclidean(space.x[centres], centres.size)
    picked = _farthest_first(sub, sub.min_to(np.array([0])), cover, (0,))
    return space.min_to(centres[picked]), centres


def _nearest(x: npt.NDArray[np.float32], means: npt.NDArray[np.float32]) -> IntArray:
    """(len(x),) index of each row's nearest mean (the lowest on ties)."""
    m_sq = np.einsum("ij,ij->i", means, means)
    m2 = means * np.float32(-2.0)
    out = np.empty(x.shape[0], dtype=np.int64)
    blocks = _row_blocks(x.shape[0], means.shape[0])
    for start in blocks:
        cross = x[start : start + blocks.step] @ m2.T
        cross += m_sq
        out[start : start + blocks.step] = cross.argmin(axis=1)
    return out


def _group_bound(space: _Euclidean, centres: IntArray) -> tuple[FloatArray, IntArray | None]:
    """(C,) squared distance from each candidate to its nearest centre, or a tight upper bound on it.

    ``centres`` are rows of ``space``. Up to ``_KCENTER_EXACT`` centres the distance is exact
    (returned with None). Beyond that the L centres are split into about sqrt(L) groups around means
    moved by a few Lloyd steps, and each candidate is measured against the centres of the group with
    the nearest mean only: ~2·sqrt(L) products per candidate instead of L. The bound is returned with
    ``centres``; :func:`_farthest_first` measures the few candidates it looks at against them all.

    On clustered embeddings a candidate's nearest labelled clip is nearly always in that group: on
    the acq_speed pool (10k labelled, 100k candidates, 200-d) ~1k candidates have a bound above the
    100th pick's distance, against 74k for a farthest-first cover of 256. Lower bounds from the
    triangle inequality (``d(x, mean) - radius``) would let a candidate skip groups, but at 200-d they
    skip ~1 % of them, so the exact distances are plain matrix products.
    """
    n_cent = centres.size
    if n_cent <= _KCENTER_EXACT:
        return space.min_to(centres), None
    with _BLAS.limit(limits=1, user_api="blas"):  # ~sqrt(L) small products: 0.3 s, not 1.5 s
        return _distance_in_nearest_group(space, centres), centres


def _distance_in_nearest_group(space: _Euclidean, centres: IntArray) -> FloatArray:
    """The body of :func:`_group_bound`: the bound from the nearest group's centres."""
    n_cent = centres.size
    n_groups = int(np.sqrt(n_cent))
    xc = space.x[centres]
    means = xc[np.linspace(0, n_cent - 1, n_groups).astype(np.int64)]
    group = _nearest(xc, means)
    for _ in range(_LLOYD_STEPS):
        onehot = np.zeros((n_cent, n_groups), dtype=np.float32)
        onehot[np.arange(n_cent), group] = 1.0
        counts = np.bincount(group, minlength=n_groups)
        filled = counts > 0  # an emptied group keeps its mean; it is dropped below if still empty
        means[filled] = (onehot.T @ xc)[filled] / counts[filled, None].astype(np.float32)
        group = _nearest(xc, means)
    # Drop empty groups (no one's nearest mean changes), so every candidate's group has centres.
    used = np.flatnonzero(np.bincount(group, minlength=n_groups))
    group = np.searchsorted(used, group)
    cand_group = _nearest(space.x[: space.n], means[used])
    by_group, by_cand = np.argsort(group, kind="stable"), np.argsort(cand_group, kind="stable")
    cent_ends = np.cumsum(np.bincount(group, minlength=used.size))
    cand_ends = np.cumsum(np.bincount(cand_group, minlength=used.size))
    bound = np.empty(space.n)
    for g in range(used.size):
        rows = by_cand[(cand_ends[g - 1] if g else 0) : cand_ends[g]]
        if rows.size:
            cols = centres[by_group[(cent_ends[g - 1] if g else 0) : cent_ends[g]]]
            bound[rows] = space.min_to(cols, rows=rows)
    return bound


def _with_centres(centres: IntArray | None, recent: Sequence[int]) -> IntArray:
    """Rows to measure a candidate against: ``centres`` (if any) and the ``recent`` picks."""
    rec = np.asarray(recent, dtype=np.int64)
    return rec if centres is None else np.concatenate([centres, rec])


def _farthest_first(
    space: _Space,
    dist: FloatArray,
    n: int,
    first: Sequence[int] = (),
    centres: IntArray | None = None,
) -> IntArray:
    """Greedy k-center over ``space``: ``n`` candidate rows (``first`` included), in pick order.

    ``dist`` (C,) is each candidate's squared distance to the centres so far (labelled clips and
    ``first``); with ``centres`` given it is only an upper bound (:func:`_centre_bound`) and the
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
                return _farthest_first(space, full, n, picks)
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
            with _BLAS.limit(limits=1, user_api="blas"):  # one column
                np.minimum(d_act, sub.min_to(np.array([k])), out=d_act)
        d_act[k] = -np.inf
    return np.asarray(picks, dtype=np.int64)


_REFRESH_AFTER = 64  # rejected proposals before the D² bound is recomputed (one matrix product)


def _dsq_sample(
    space: _Space,
    dist: FloatArray,
    n: int,
    rng: np.random.Generator,
    first: Sequence[int] = (),
    centres: IntArray | None = None,
    *,
    grouped: bool = False,
) -> IntArray:
    """k-means++ (D²) sampling over ``space``: ``n`` candidate rows (``first`` included), in pick order.

    Each pick is drawn with probability proportional to its squared distance to the nearest centre
    or earlier pick, exactly, without a pass over all C candidates per pick. ``dist`` (C,) is the
    squared distance to the centres so far (labelled clips and ``first``), or with ``centres`` given
    an upper bound on it (:func:`_centre_bound`); either way it bounds every later distance. A
    proposal j is drawn proportional to the bound and accepted with probability ``d_j / bound_j``,
    where ``d_j`` needs only the picks made since the bound was computed (and ``centres``): rejection
    sampling, so accepted proposals follow the D² law. After ``_REFRESH_AFTER`` rejections the bound
    is tightened with one matrix product against the recent picks. A loose bound (``centres`` given)
    that rejects too often is replaced by the tight one of :func:`_group_bound` (``grouped``), and if
    that too rejects too often, made exact. Any bound gives the same law; the draws for a given
    ``rng`` depend on the bound, and so on when it is replaced. If every remaining candidate
    coincides with a centre, the next pick is uniform among them.
    """
    picks = [int(j) for j in first]
    n_pts, since = space.n, len(picks)
    chosen = np.zeros(n_pts, dtype=bool)
    chosen[picks] = True
    bound = np.where(chosen, 0.0, np.asarray(dist, dtype=np.float64))
    cum = np.cumsum(bound)
    total = float(cum[-1]) if n_pts else 0.0
    rejected = 0
    prepared = None
    if centres is not None:
        assert isinstance(space, _Euclidean), "labelled centres are embedding rows"
        prepared = space.prepare(centres)  # each proposal is measured against all of them
    while len(picks) < n:
        if not (np.isfinite(total) and total > 0.0):
            j = int(rng.choice(np.flatnonzero(~chosen)))
            accept = True
        else:
            j = min(int(np.searchsorted(cum, rng.random() * total, side="right")), n_pts - 1)
            accept = False
            if not chosen[j] and bound[j] > 0.0:
                d = bound[j]
                row = np.array([j])
                with _BLAS.limit(limits=1, user_api="blas"):  # one row: 0.1 s, not 0.15-1.3 s
                    if isinstance(space, _Euclidean) and centres is not None:
                        d = min(d, float(space.min_to(centres, rows=row, prepared=prepared)[0]))
                    if len(picks) > since:
                        d = min(d, float(space.min_to(np.asarray(picks[since:]), rows=row)[0]))
                accept = bool(rng.random() * bound[j] < d)
        if accept:
            picks.append(j)
            chosen[j] = True
            continue
        rejected += 1
        if centres is not None and rejected >= 4 * _REFRESH_AFTER + 2 * n:
            tight = bound  # bounds the distance to the centres and the picks before ``since``
            if len(picks) > since:
                np.minimum(tight, space.min_to(np.asarray(picks[since:])), out=tight)
            cols: IntArray | None = None
            if grouped:
                np.minimum(tight, space.min_to(centres), out=tight)
            else:
                group_dist, cols = _group_bound(cast(_Euclidean, space), centres)
                np.minimum(tight, group_dist, out=tight)
            return _dsq_sample(space, tight, n, rng, picks, cols, grouped=True)
        if centres is None and rejected >= _REFRESH_AFTER and len(picks) > since:
            np.minimum(bound, space.min_to(np.asarray(picks[since:])), out=bound)
            bound[chosen] = 0.0
            cum = np.cumsum(bound)
            total = float(cum[-1])
            since, rejected = len(picks), 0
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
    Exact greedy order (float32 distances), computed by pruning: see :func:`_farthest_first`.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    cent = np.asarray(centres, dtype=np.int64)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    space = _euclidean_space(embeddings, cand, cent)
    first: tuple[int, ...] = ()
    loose: IntArray | None = None
    if cent.size:
        dist, loose = _group_bound(space, cand.size + np.arange(cent.size))
    else:
        first = (int(np.argmin(space.sq[: cand.size])),)  # x is centred on the candidates' mean
        dist = space.min_to(np.asarray(first))
    return cand[_farthest_first(space, dist, n, first, loose)]


def kmeans_pp_seeding(
    embeddings: npt.ArrayLike,
    *,
    candidates: npt.ArrayLike,
    centres: npt.ArrayLike,
    n: int,
    rng: np.random.Generator | None = None,
) -> IntArray:
    """k-means++ seeding: each next pick drawn with probability proportional to D² to the centres.

    Parameters
    ----------
    embeddings : (N, D) array-like
    candidates : (C,) int
    centres : (L,) int
        Already-chosen centres (labelled clips); if empty the first pick is uniform.
    n : int
    rng : numpy Generator, optional
        Source of randomness (a fresh unseeded one if None).

    Returns
    -------
    (n,) int64
        Indices into [0, N) in pick order.

    Notes
    -----
    Exactly the D² law (float32 distances), sampled by rejection: see :func:`_dsq_sample`.
    """
    rng = np.random.default_rng() if rng is None else rng
    cand = np.asarray(candidates, dtype=np.int64)
    cent = np.asarray(centres, dtype=np.int64)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    space = _euclidean_space(embeddings, cand, cent)
    first: tuple[int, ...] = ()
    loose: IntArray | None = None
    if cent.size:
        dist, loose = _centre_bound(space, cand.size + np.arange(cent.size), _KMEANSPP_COVER)
    else:
        first = (int(rng.integers(cand.size)),)
        dist = space.min_to(np.asarray(first))
    return cand[_dsq_sample(space, dist, n, rng, first, loose)]


def _diversity_pick(
    req: _Request, candidates: IntArray, how: ColdStart, rng: np.random.Generator | None
) -> IntArray:
    centres = np.flatnonzero(req.labeled)
    if how == "kcenter":
        return k_center_greedy(req.embeddings, candidates=candidates, centres=centres, n=req.n)
    if how == "kmeans++":
        return kmeans_pp_seeding(
            req.embeddings, candidates=candidates, centres=centres, n=req.n, rng=rng
        )
    raise ValueError(f"unknown diversity method {how!r}; use 'kmeans++' or 'kcenter'")


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------


class RandomSampling:
    """Uniform random order over the unlabelled clips (the baseline)."""

    name: ClassVar[str] = "random"

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
        req = _check_request(
            pred_probs=None, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        rng = np.random.default_rng() if rng is None else rng
        cand = np.flatnonzero(~req.labeled)
        return rng.choice(cand, size=req.n, replace=False).astype(np.int64)


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
        req = _check_request(
            pred_probs=pred_probs, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        cand = np.flatnonzero(~req.labeled)
        if req.pred_probs is None:
            return _diversity_pick(req, cand, self.cold_start, rng)
        return _top_n(self.scores(req.pred_probs, req.hierarchy), cand, req.n, rng)


@dataclass
class DiversitySampling:
    """Spread the batch over embedding space, away from what is already labelled.

    Parameters
    ----------
    method : {"kcenter", "kmeans++"}
        ``"kcenter"``: greedy k-center / core-set (deterministic, favours the edges of the data).
        ``"kmeans++"``: D²-weighted sampling (random, favours dense regions more than k-center).
    """

    method: ColdStart = "kcenter"
    name: ClassVar[str] = "diversity"

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
        req = _check_request(
            pred_probs=None, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        return _diversity_pick(req, np.flatnonzero(~req.labeled), self.method, rng)


def decision_gradient_factors(
    pred_probs: npt.ArrayLike, parents: npt.ArrayLike | Hierarchy
) -> FloatArray:
    """(N, K) loss-gradient factor ``w·(q - ŷ)`` per decision, ``ŷ = [q ≥ 0.5]`` (BADGE's hallucinated label).

    The BADGE gradient embedding of a clip with embedding h (D,) is the outer product of this row with
    h (a (K·D,) vector); it is never materialised (see :class:`BadgeLike`).
    """
    grad: FloatArray = _gradient_factors(pred_probs, as_hierarchy(parents), np.float64)
    return grad


def _gradient_factors(
    pred_probs: npt.ArrayLike, hier: Hierarchy, dtype: type[np.floating[Any]]
) -> npt.NDArray[Any]:
    q, w = _decisions(pred_probs, hier, dtype)
    q -= q >= 0.5  # in place: q - ŷ
    q *= w
    return q


@dataclass
class BadgeLike:
    """Uncertainty and diversity together: k-means++ seeding in a BADGE gradient space.

    Parameters
    ----------
    embedding : {"gradient", "scaled"}
        ``"gradient"`` (BADGE): the last-layer gradient of the per-decision logistic loss under the
        model's own predicted labels, ``g = a ⊗ h`` with ``a`` from :func:`decision_gradient_factors`
        and ``h`` the clip embedding. Distances use ``|a_i ⊗ h_i - a_j ⊗ h_j|² = |a_i|²|h_i|² +
        |a_j|²|h_j|² - 2 (a_i·a_j)(h_i·h_j)``, so the (K·D)-dimensional space costs O(N(K + D)) per
        pick. The first pick is the largest gradient norm, as in BADGE.
        ``"scaled"``: embeddings multiplied by :func:`hierarchical_uncertainty` (a cheaper proxy).
    cold_start : {"kmeans++", "kcenter"}
    """

    embedding: Literal["gradient", "scaled"] = "gradient"
    cold_start: ColdStart = "kmeans++"
    name: ClassVar[str] = "badge"

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
        req = _check_request(
            pred_probs=pred_probs, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        cand = np.flatnonzero(~req.labeled)
        if req.pred_probs is None:
            return _diversity_pick(req, cand, self.cold_start, rng)
        rng = np.random.default_rng() if rng is None else rng
        space: _Space
        if self.embedding == "scaled":
            u = hierarchical_uncertainty(req.pred_probs, req.hierarchy)[cand]
            hs = np.asarray(req.embeddings)[cand].astype(np.float32, copy=False)
            hs *= u[:, None].astype(np.float32)
            first = int(np.argmax(np.einsum("ij,ij->i", hs, hs, dtype=np.float64)))
            space = _Euclidean(hs, cand.size)
        elif self.embedding == "gradient":
            a = _gradient_factors(req.pred_probs, req.hierarchy, np.float32)[cand]
            h = np.asarray(req.embeddings)[cand].astype(np.float32, copy=False)
            space = _Gradient(a, h)
            first = int(np.argmax(space.sq))
        else:
            raise ValueError(f"unknown embedding {self.embedding!r}")
        dist = space.min_to(np.array([first]))
        return cand[_dsq_sample(space, dist, req.n, rng, (first,))]


def activelab_scores(
    *,
    confidence: npt.ArrayLike,
    consensus_quality: npt.ArrayLike,
    labeled: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    model_weight: float = 1.0,
    annotator_weight: float = 1.0,
    prior: float = 0.5,
) -> FloatArray:
    """ActiveLab's unified score (lower = the next annotation is worth more), reimplemented.

    For a labelled clip i with ``n_i`` annotations the score shrinks its consensus quality toward the
    chance level ``prior`` with the weight of one more (average) annotator::

        s_i = (W_i · quality_i + w_a · prior) / (W_i + w_a),   W_i = n_i · w_a + w_m

    so a clip with many agreeing annotations is hard to beat. For an unlabelled clip only the model
    speaks::

        s_i = (w_m · confidence_i + w_a · prior) / (w_m + w_a)

    This is Goh & Mueller's ActiveLab (cleanlab ``get_active_learning_scores``) with the per-class
    prior ``1/K`` replaced by the per-decision chance level 0.5 and one shared annotator weight.

    Parameters
    ----------
    confidence : (N,) float
        Model confidence per clip (:func:`decision_confidence`); used for unlabelled clips.
    consensus_quality : (N,) float
        Consensus quality per clip on the same scale; used for labelled clips (NaN elsewhere is fine).
    labeled : (N,) bool
    n_annotations : (N,) int
    model_weight, annotator_weight : float
        CROWDLAB-style trust in the model and in an average annotator (both > 0).
    prior : float
        Chance-level quality.

    Returns
    -------
    (N,) float64
    """
    conf = np.asarray(confidence, dtype=np.float64)
    qual = np.asarray(consensus_quality, dtype=np.float64)
    lab = np.asarray(labeled, dtype=bool)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    wm, wa = float(model_weight), float(annotator_weight)
    if wm <= 0 or wa <= 0:
        raise ValueError("model_weight and annotator_weight must be positive")
    big_w = n_ann * wa + wm
    labelled_score = (big_w * np.nan_to_num(qual, nan=prior) + wa * prior) / (big_w + wa)
    unlabelled_score = (wm * conf + wa * prior) / (wm + wa)
    return np.where(lab, labelled_score, unlabelled_score)


def vote_posterior(
    *,
    pred_probs: npt.ArrayLike,
    label_counts: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    model_weight: float = 1.0,
    annotator_weight: float = 1.0,
) -> FloatArray:
    """Marginals of the model and the annotators' votes pooled decision by decision (CROWDLAB's form).

    For each parent->child decision with model conditional ``q = P(k | parent)``, ``v_on``
    annotations that switch k on and ``v`` annotations that made the decision (those with the
    parent on; every annotation for a root)::

        P(k | parent, votes) = (w_m · q + w_a · v_on) / (w_m + w_a · v)

    i.e. :func:`quality.core.consensus.get_consensus`'s posterior with hard votes and given weights.
    A clip nobody labelled keeps the model's probabilities. :func:`decision_confidence` of the
    result is the quality of the consensus (the posterior's own label set), the score ActiveLab
    gives a labelled clip: with equal weights a lone label the model contradicts, or a 1-1 split,
    comes out near chance and a label two annotators agree on near 1. (CROWDLAB's own quality,
    from its estimated weights, loses that ordering where the weights collapse: on the corpus
    (log-mel + structure features, an always-new run, 160-720 lone labels) both weights sit at
    their floor and its quality does not rank wrong labels above right ones, ROC AUC 0.47-0.55,
    where the model's self-confidence in the label gives 0.64-0.68.)

    Parameters
    ----------
    pred_probs : (N, K) float
        Hierarchy-consistent model probabilities (out-of-sample for labelled clips).
    label_counts : (N, K) int
        Per clip and node, how many of its annotations (ancestor-closed label sets) have the node on.
    n_annotations : (N,) int
    parents : (K,) int or Hierarchy
    model_weight, annotator_weight : float
        Trust in the model and in one annotation (both > 0).

    Returns
    -------
    (N, K) float64
        Hierarchy-consistent posterior marginals.
    """
    hier = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    on = np.asarray(label_counts, dtype=np.float64)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    if on.shape != p.shape or n_ann.shape != (p.shape[0],):
        raise ValueError(
            f"label_counts {on.shape} and n_annotations {n_ann.shape} do not match pred_probs "
            f"{p.shape}"
        )
    wm, wa = float(model_weight), float(annotator_weight)
    if wm <= 0 or wa <= 0:
        raise ValueError("model_weight and annotator_weight must be positive")
    q, _ = _decisions(p, hier)
    made = parent_values(on, hier, root=n_ann[:, None])  # votes cast on each decision
    post = (wm * q + wa * on) / (wm + wa * made)
    marg = hier.marginal(post)
    return marg


def _vote_temperature(logit: FloatArray, on: FloatArray, made: FloatArray) -> float:
    """Temperature T that best predicts the votes cast from ``logit / T`` (binomial NLL).

    ActiveLab temperature-scales the model before weighing it against annotators; an overconfident
    prior would put many lone labels at even odds and ask for opinions that only confirm them.
    """
    rows = made > 0
    if not rows.any():
        return 1.0
    z, k, m = logit[rows], on[rows], made[rows]
    temps = np.geomspace(0.25, 16.0, 49)
    nll = [
        float(np.sum(m * np.logaddexp(0.0, z / t) - k * z / t)) for t in temps
    ]  # -log-likelihood of k "on" votes of m under sigmoid(z / t), up to a constant
    return float(temps[int(np.argmin(nll))])


def relabel_gain(
    *,
    pred_probs: npt.ArrayLike,
    label_counts: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    decision_accuracy: float | npt.ArrayLike,
    temperature: float | None = None,
) -> FloatArray:
    """Expected gain in the probability that a clip's consensus is right from one more annotation.

    Per parent->child decision k, the model's conditional ``q`` is the prior (temperature-scaled to
    the votes cast, as ActiveLab scales the model) and each annotation a vote that is right with
    probability ``a_k = decision_accuracy[k]`` (naive Bayes: Dawid-Skene with one symmetric
    annotator)::

        logit P(k on | parent on, votes) = logit q / T + (v_on - v_off) · logit a_k

    The consensus takes the likelier side, so it is right with ``max(P, 1 - P)``. One more vote (on
    with probability ``P a_k + (1 - P)(1 - a_k)``) moves the logit by ``± logit a_k``; the gain is
    the expected ``max`` after it less the ``max`` now: the value of information of the annotation,
    zero unless the vote can flip the decision, at most ``a_k - 1/2`` (even odds). A decision weighs
    by the posterior probability that it is asked (its parent is on); a clip scores its largest
    weighted gain. A lone label the model confidently contradicts, or a 1-1 split the model cannot
    break, sits near even odds and gains most; a label two annotators agree on, or that the model
    confirms, gains nothing.

    Parameters
    ----------
    pred_probs : (N, K) float
        Hierarchy-consistent, out-of-sample model probabilities (the prior).
    label_counts : (N, K) int
        Per clip and node, how many of its annotations have the node on.
    n_annotations : (N,) int
    parents : (K,) int or Hierarchy
    decision_accuracy : float or (K,) float
        Probability in (0.5, 1) that an annotation gets decision k right (higher than the
        probability that the whole label set is right: an error touches one or two decisions).
    temperature : float, optional
        Divides the model's logits; default: the one that best predicts the votes cast.

    Returns
    -------
    (N,) float64
        In [0, max(a) - 1/2].
    """
    hier = as_hierarchy(parents)
    acc = np.broadcast_to(np.asarray(decision_accuracy, dtype=np.float64), (hier.n_nodes,))
    if np.any(acc <= 0.5) or np.any(acc >= 1.0):
        raise ValueError("decision_accuracy must lie in (0.5, 1)")
    p = np.asarray(pred_probs, dtype=np.float64)
    on = np.asarray(label_counts, dtype=np.float64)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    if on.shape != p.shape or n_ann.shape != (p.shape[0],):
        raise ValueError(
            f"label_counts {on.shape} and n_annotations {n_ann.shape} do not match pred_probs "
            f"{p.shape}"
        )
    q, _ = _decisions(p, hier)
    made = parent_values(on, hier, root=n_ann[:, None])  # votes cast on each decision
    step = np.log(acc / (1.0 - acc))
    q = np.clip(q, 1e-6, 1.0 - 1e-6)
    prior = np.log(q / (1.0 - q))
    prior /= _vote_temperature(prior, on, made) if temperature is None else float(temperature)
    logit = prior + (2.0 * on - made) * step

    def sure(x: FloatArray) -> FloatArray:
        return cast(FloatArray, 1.0 / (1.0 + np.exp(-np.abs(x))))

    post = 1.0 / (1.0 + np.exp(-logit))
    p_on = post * acc + (1.0 - post) * (1.0 - acc)
    gain = p_on * sure(logit + step) + (1.0 - p_on) * sure(logit - step) - sure(logit)
    marg = hier.marginal(post)
    reach = parent_values(marg, hier, root=1.0)
    out: FloatArray = np.clip((reach * gain).max(axis=1, initial=0.0), 0.0, None)
    return out


@dataclass(frozen=True)
class RelabelOrNewSelection:
    """What :meth:`RelabelOrNew.select_detailed` returns.

    Attributes
    ----------
    indices : (n,) int64
        Ranked indices into [0, N), most valuable first.
    relabel : (n,) bool
        True where the index is a labelled clip (ask for another opinion), False for a new clip.
    scores : (n,) float64
        The ActiveLab scores of the picks (ascending).
    """

    indices: IntArray
    relabel: BoolArray
    scores: FloatArray


@dataclass
class RelabelOrNew:
    """One ranking over labelled and unlabelled clips: a second opinion or a new label, whichever is worth more.

    Labelled clips are scored by the consensus quality of their current labels, unlabelled ones by the
    model's confidence (:func:`decision_confidence`), both shrunk toward chance by
    :func:`activelab_scores`; the lowest scores come first. ``consensus_quality`` and
    ``n_annotations`` are required once a model exists, unless ``label_counts`` ((N, K) int: per
    clip and node, the annotations with the node on) is passed: then labelled clips are scored by
    their quality under :func:`vote_posterior` instead. Labelled clips with ``max_annotations``
    annotations are never proposed again.

    Measured on the corpus (``bench/results/acq_simulate_800_relabel.md``: 75 %-accurate
    annotators, 800 annotations, 5 seeds) no variant beats "always label new" by more than the
    noise, and neither does an oracle that relabels exactly the wrong labels (+0.01 hF1, paired
    se 0.01): with this model at this budget a second opinion is worth about as much as a new clip.

    Parameters
    ----------
    model_weight, annotator_weight : float
        Weights for :func:`activelab_scores` (CROWDLAB estimates them; pass them in).
    max_annotations : int
        Cap on annotations per clip.
    prior : float
        Chance-level quality that scores are shrunk toward.
    confidence_pooling : {"ema", "mean"}
        How the unlabelled clips' confidence is pooled (:func:`decision_confidence`). Keep it on
        the scale of ``consensus_quality``: ``"ema"`` matches
        ``quality.core.consensus.get_consensus(...).consensus_quality``.
    mode : {"both", "new", "relabel"}
        ``"both"`` (the point of this strategy); ``"new"`` and ``"relabel"`` restrict the same
        ranking to unlabelled or to labelled clips: the "always label new" and "always relabel"
        policies it is benchmarked against.
    cold_start : {"kmeans++", "kcenter"}
        With no model: new clips only, chosen for diversity.
    rule : {"activelab", "gain"}
        ``"activelab"`` (default): one ranking by :func:`activelab_scores`. ``"gain"``: a labelled
        clip is asked again when one more opinion is worth more than a new label, counted in right
        labels with a wrong label costing ``c = noise_cost`` of them: a new label adds
        ``a - (1 - a) c`` (``a = annotator_accuracy``, the chance that a whole label set is right),
        a relabel ``g (1 + c)`` (``g`` its :func:`relabel_gain`, one wrong label made right). At
        ``c = 1``: relabel where ``g > a - 1/2``. Relabels go by descending gain, the rest of the
        batch to new clips by :func:`activelab_scores`. Needs ``label_counts``,
        ``annotator_accuracy`` and ``decision_accuracy``.
    annotator_accuracy : float, optional
        Probability that an annotation's whole label set is right (``rule="gain"``).
    decision_accuracy : float or tuple of K floats, optional
        Probability that an annotation gets one decision right (:func:`relabel_gain`).
    noise_cost : float
        Worth lost to a wrong label, in right labels (``rule="gain"``); 1 counts both alike.
    """

    model_weight: float = 1.0
    annotator_weight: float = 1.0
    max_annotations: int = 5
    prior: float = 0.5
    confidence_pooling: Literal["ema", "mean"] = "ema"
    mode: Literal["both", "new", "relabel"] = "both"
    cold_start: ColdStart = "kmeans++"
    rule: Literal["activelab", "gain"] = "activelab"
    annotator_accuracy: float | None = None
    decision_accuracy: float | tuple[float, ...] | None = None
    noise_cost: float = 1.0
    name: ClassVar[str] = "relabel_or_new"

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
        label_counts: npt.ArrayLike | None = None,
    ) -> IntArray:
        return self.select_detailed(
            pred_probs=pred_probs,
            embeddings=embeddings,
            labeled=labeled,
            n=n,
            parents=parents,
            consensus_quality=consensus_quality,
            n_annotations=n_annotations,
            rng=rng,
            label_counts=label_counts,
        ).indices

    def select_detailed(
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
        label_counts: npt.ArrayLike | None = None,
    ) -> RelabelOrNewSelection:
        """As :meth:`select`, with the relabel flag and score of each pick."""
        emb = np.asarray(embeddings)
        n_clips = emb.shape[0] if emb.ndim == 2 else 0
        n_ann = (
            np.zeros(n_clips, dtype=np.int64)
            if n_annotations is None
            else np.asarray(n_annotations, dtype=np.int64)
        )
        if n_ann.shape != (n_clips,):
            raise ValueError(f"n_annotations has shape {n_ann.shape}, expected ({n_clips},)")
        cold = pred_probs is None

        if self.mode not in ("both", "new", "relabel"):
            raise ValueError(f"unknown mode {self.mode!r}")

        def candidates(mask: BoolArray) -> BoolArray:
            relabel = mask & (n_ann < self.max_annotations)
            if cold or self.mode == "new":
                return ~mask
            return relabel if self.mode == "relabel" else ~mask | relabel

        def n_candidates(mask: BoolArray) -> int:
            return int(candidates(mask).sum())

        req = _check_request(
            pred_probs=pred_probs,
            embeddings=emb,
            labeled=labeled,
            n=n,
            parents=parents,
            n_candidates=n_candidates,
        )
        if req.pred_probs is None:
            picks = _diversity_pick(req, np.flatnonzero(~req.labeled), self.cold_start, rng)
            return RelabelOrNewSelection(
                picks, np.zeros(picks.size, dtype=bool), np.full(picks.size, np.nan)
            )
        if label_counts is not None:
            quality = decision_confidence(
                vote_posterior(
                    pred_probs=req.pred_probs,
                    label_counts=label_counts,
                    n_annotations=n_ann,
                    parents=req.hierarchy,
                    model_weight=self.model_weight,
                    annotator_weight=self.annotator_weight,
                ),
                req.hierarchy,
                pooling=self.confidence_pooling,
            )
            consensus_quality = np.where(req.labeled, quality, np.nan)
        if consensus_quality is None:
            raise ValueError("RelabelOrNew needs consensus_quality once a model exists")
        quality = np.asarray(consensus_quality, dtype=np.float64)
        if quality.shape != (n_clips,):
            raise ValueError(f"consensus_quality has shape {quality.shape}, expected ({n_clips},)")
        if np.any(req.labeled & np.isnan(quality)):
            raise ValueError("consensus_quality is NaN for a labelled clip")
        scores = activelab_scores(
            confidence=decision_confidence(
                req.pred_probs, req.hierarchy, pooling=self.confidence_pooling
            ),
            consensus_quality=quality,
            labeled=req.labeled,
            n_annotations=n_ann,
            model_weight=self.model_weight,
            annotator_weight=self.annotator_weight,
            prior=self.prior,
        )
        cand = np.flatnonzero(candidates(req.labeled))
        if self.rule == "gain":
            return self._select_by_gain(req, scores, cand, n_ann, label_counts, rng)
        if self.rule != "activelab":
            raise ValueError(f"unknown rule {self.rule!r}")
        picks = _top_n(-scores, cand, req.n, rng)
        return RelabelOrNewSelection(picks, req.labeled[picks], scores[picks])

    def _select_by_gain(
        self,
        req: _Request,
        scores: FloatArray,
        cand: IntArray,
        n_ann: IntArray,
        label_counts: npt.ArrayLike | None,
        rng: np.random.Generator | None,
    ) -> RelabelOrNewSelection:
        if (
            label_counts is None
            or self.annotator_accuracy is None
            or self.decision_accuracy is None
        ):
            raise ValueError(
                'rule="gain" needs label_counts, annotator_accuracy and decision_accuracy'
            )
        assert req.pred_probs is not None
        a, c = float(self.annotator_accuracy), float(self.noise_cost)
        gain = relabel_gain(
            pred_probs=req.pred_probs,
            label_counts=label_counts,
            n_annotations=n_ann,
            parents=req.hierarchy,
            decision_accuracy=np.asarray(self.decision_accuracy, dtype=np.float64),
        )
        worth = gain * (1.0 + c)
        new_worth = a - (1.0 - a) * c
        lab = req.labeled[cand]
        rel = cand[lab]
        if self.mode == "both":
            rel = rel[worth[rel] > new_worth + 1e-12]
        rel_picks = _top_n(worth, rel, min(req.n, rel.size), rng)
        new = cand[~lab]
        new_picks = _top_n(-scores, new, min(req.n - rel_picks.size, new.size), rng)
        rest = np.setdiff1d(cand[lab], rel_picks)  # new clips ran out: the next-best relabels
        more = _top_n(worth, rest, req.n - rel_picks.size - new_picks.size, rng)
        picks = np.concatenate([rel_picks, new_picks, more])
        values = np.concatenate([worth[rel_picks], np.full(new_picks.size, new_worth), worth[more]])
        return RelabelOrNewSelection(picks, req.labeled[picks], values)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

# The strategies declare ``name`` as a ClassVar, which mypy does not match against the protocol's
# instance attribute; they satisfy the protocol at runtime (see the tests), hence the casts.
_StrategyFactory = Callable[..., AcquisitionStrategy]
_REGISTRY: dict[str, _StrategyFactory] = {
    "random": cast(_StrategyFactory, RandomSampling),
    "uncertainty": cast(_StrategyFactory, HierarchicalUncertainty),
    "diversity": cast(_StrategyFactory, DiversitySampling),
    "badge": cast(_StrategyFactory, BadgeLike),
    "relabel_or_new": cast(_StrategyFactory, RelabelOrNew),
}


def available_strategies() -> list[str]:
    """Registered strategy names."""
    return sorted(_REGISTRY)


def get_strategy(name: str, **options: Any) -> AcquisitionStrategy:
    """Instantiate a registered strategy with its options.

    Examples
    --------
    >>> get_strategy("uncertainty", measure="margin").name
    'uncertainty'

    Raises
    ------
    KeyError
        For an unknown name.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown acquisition strategy {name!r}; known: {available_strategies()}"
        ) from None
    return factory(**options)
