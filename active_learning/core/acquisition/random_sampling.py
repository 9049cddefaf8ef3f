"""The baseline: a uniform random order over the unlabelled clips."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import IntArray, check_request
from taxonomy.hierarchy import Hierarchy


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
        req = check_request(
            pred_probs=None, embeddings=embeddings, labeled=labeled, n=n, parents=parents
        )
        rng = np.random.default_rng() if rng is None else rng
        cand = np.flatnonzero(~req.labeled)
        return rng.choice(cand, size=req.n, replace=False).astype(np.int64)
