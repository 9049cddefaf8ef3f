"""BADGE: k-means++ seeding in the space of per-decision loss gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import ColdStart, FloatArray, IntArray, check_request
from active_learning.core.acquisition.distance import Euclidean, Gradient, Space
from active_learning.core.acquisition.diversity import diversity_pick
from active_learning.core.acquisition.kmeanspp import dsq_sample
from active_learning.core.acquisition.uncertainty import hierarchical_uncertainty
from taxonomy.hierarchy import Hierarchy, as_hierarchy


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
    q, w = hier.decision_probabilities(pred_probs, dtype=dtype)
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
        req = check_request(
            pred_probs=pred_probs, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        cand = np.flatnonzero(~req.labeled)
        if req.pred_probs is None:
            return diversity_pick(req, cand, self.cold_start, rng)
        rng = np.random.default_rng() if rng is None else rng
        space: Space
        if self.embedding == "scaled":
            u = hierarchical_uncertainty(req.pred_probs, req.hierarchy)[cand]
            hs = np.asarray(req.embeddings)[cand].astype(np.float32, copy=False)
            hs *= u[:, None].astype(np.float32)
            first = int(np.argmax(np.einsum("ij,ij->i", hs, hs, dtype=np.float64)))
            space = Euclidean(hs, cand.size)
        elif self.embedding == "gradient":
            a = _gradient_factors(req.pred_probs, req.hierarchy, np.float32)[cand]
            h = np.asarray(req.embeddings)[cand].astype(np.float32, copy=False)
            space = Gradient(a, h)
            first = int(np.argmax(space.sq))
        else:
            raise ValueError(f"unknown embedding {self.embedding!r}")
        dist = space.min_to(np.array([first]))
        return cand[dsq_sample(space, dist, req.n, rng, (first,))]
