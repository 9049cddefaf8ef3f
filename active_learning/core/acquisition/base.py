"""The interface every strategy implements, its errors, and the request checks they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from taxonomy.hierarchy import Hierarchy, as_hierarchy

FloatArray = npt.NDArray[np.float64]


IntArray = npt.NDArray[np.int64]


BoolArray = npt.NDArray[np.bool_]


Measure = Literal["entropy", "margin", "least_confidence"]


Pool = Literal["sum", "mean", "max"]


ColdStart = Literal["kmeans++", "kcenter"]


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
class Request:
    pred_probs: FloatArray | None
    embeddings: npt.NDArray[np.floating]
    labeled: BoolArray
    hierarchy: Hierarchy
    n: int


def as_mask(labeled: npt.ArrayLike, n_clips: int) -> BoolArray:
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


def check_request(
    *,
    pred_probs: npt.ArrayLike | None,
    embeddings: npt.ArrayLike,
    labeled: npt.ArrayLike,
    n: int,
    parents: npt.ArrayLike | Hierarchy,
    n_candidates: Callable[[BoolArray], int] | None = None,
) -> Request:
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
    mask = as_mask(labeled, n_clips)
    if n < 0:
        raise PoolSizeError(f"n must be >= 0, got {n}")
    available = int((~mask).sum()) if n_candidates is None else n_candidates(mask)
    if n > 0 and available == 0:
        raise EmptyPoolError("no candidate clips: the pool is empty or fully labelled")
    if n > available:
        raise PoolSizeError(f"asked for {n} clips but only {available} candidates remain")
    return Request(probs, emb, mask, hier, int(n))


def top_n(
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
