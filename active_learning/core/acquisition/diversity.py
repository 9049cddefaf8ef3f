"""Diversity sampling over the embeddings, and the cold start of the model-based strategies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import ColdStart, IntArray, Request, check_request
from active_learning.core.acquisition.kcenter import k_center_greedy
from active_learning.core.acquisition.kmeanspp import kmeans_pp_seeding
from taxonomy.hierarchy import Hierarchy


def diversity_pick(
    req: Request, candidates: IntArray, how: ColdStart, rng: np.random.Generator | None
) -> IntArray:
    centres = np.flatnonzero(req.labeled)
    if how == "kcenter":
        return k_center_greedy(req.embeddings, candidates=candidates, centres=centres, n=req.n)
    if how == "kmeans++":
        return kmeans_pp_seeding(
            req.embeddings, candidates=candidates, centres=centres, n=req.n, rng=rng
        )
    raise ValueError(f"unknown diversity method {how!r}; use 'kmeans++' or 'kcenter'")


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
        req = check_request(
            pred_probs=None, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        return diversity_pick(req, np.flatnonzero(~req.labeled), self.method, rng)
