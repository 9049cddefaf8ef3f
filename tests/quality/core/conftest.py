"""Synthetic hierarchical data with planted, typed label noise (fixed seeds, no ../shared)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from quality.core.noise import inject_label_noise, random_paths, simulate_pred_probs
from taxonomy.hierarchy import Hierarchy


def balanced_tree(n_roots: int = 4, branching: int = 3, depth: int = 3) -> Hierarchy:
    parents: list[int] = []
    frontier = []
    for _ in range(n_roots):
        parents.append(-1)
        frontier.append(len(parents) - 1)
    for _ in range(depth - 1):
        nxt = []
        for node in frontier:
            for _ in range(branching):
                parents.append(node)
                nxt.append(len(parents) - 1)
        frontier = nxt
    return Hierarchy(np.asarray(parents, dtype=np.int64))


@dataclass(frozen=True)
class NoisyData:
    h: Hierarchy
    true: np.ndarray
    noisy: np.ndarray
    kinds: np.ndarray
    pred_probs: np.ndarray

    @property
    def is_error(self) -> np.ndarray:
        return self.kinds != ""


@pytest.fixture(scope="session")
def tree() -> Hierarchy:
    return balanced_tree()  # 4 + 12 + 36 = 52 nodes


@pytest.fixture(scope="session")
def noisy_data(tree: Hierarchy) -> NoisyData:
    true = random_paths(4000, parents=tree, seed=11, multi_label_rate=0.3)
    probs = simulate_pred_probs(true, parents=tree, seed=12, noise=1.2)
    noisy, kinds = inject_label_noise(true, parents=tree, noise_rate=0.1, seed=13)
    return NoisyData(tree, true, noisy, kinds, probs)
