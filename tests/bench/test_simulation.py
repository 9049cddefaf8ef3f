"""Simulation harness: oracle, noisy annotators, rounds, savings — on small synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from active_learning.core.acquisition import HierarchicalUncertainty, RandomSampling, RelabelOrNew
from bench.simulation import (
    AnnotatorModel,
    SimulationConfig,
    annotations_to_reach,
    label_savings,
    simulate,
)
from taxonomy.hierarchy import Hierarchy

# 0 A, 1 A/a1, 2 A/a2, 3 B, 4 B/b1, 5 B/b2, 6 B/b3
PARENTS = np.array([-1, 0, 0, -1, 3, 3, 3])
TREE = Hierarchy(PARENTS)
LEAVES = np.array([1, 2, 4, 5, 6])


class CentroidModel:
    """Tiny stand-in estimator: softmax over distances to leaf centroids, summed up the tree."""

    def fit(self, X: np.ndarray, Y: np.ndarray) -> CentroidModel:
        self.centroids_ = np.stack(
            [
                X[Y[:, leaf] > 0].mean(axis=0)
                if (Y[:, leaf] > 0).any()
                else np.full(X.shape[1], 1e3)
                for leaf in LEAVES
            ]
        )
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        z = np.exp(-(d - d.min(axis=1, keepdims=True)) / 2.0)
        leaf_p = z / z.sum(axis=1, keepdims=True)
        p = np.zeros((X.shape[0], PARENTS.size))
        p[:, LEAVES] = leaf_p
        p[:, 0] = leaf_p[:, :2].sum(1)
        p[:, 3] = leaf_p[:, 2:].sum(1)
        return p


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    leaf = rng.choice(LEAVES, size=n)
    centres = {int(k): rng.normal(0, 2.5, size=4) for k in LEAVES}
    x = np.stack([centres[int(k)] for k in leaf]) + rng.normal(0, 1.0, size=(n, 4))
    y = np.zeros((n, PARENTS.size), dtype=np.int8)
    y[np.arange(n), leaf] = 1
    return x, TREE.ancestor_close(y)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x, y = dataset(500, 0)
    return {"X": x[:400], "Y": y[:400], "X_test": x[400:], "Y_test": y[400:]}


def test_annotators_err_at_the_configured_rate_mostly_on_siblings() -> None:
    _, y = dataset(4000, 1)
    ann = AnnotatorModel(accuracy=0.75, sibling_share=0.8)
    out = ann.annotate(y, TREE, np.random.default_rng(0))
    wrong = np.any(out != y, axis=1)
    assert wrong.mean() == pytest.approx(0.25, abs=0.03)
    assert not TREE.not_ancestor_closed(out).any()
    same_branch = np.all(out[wrong][:, [0, 3]] == y[wrong][:, [0, 3]], axis=1)
    assert same_branch.mean() == pytest.approx(0.8, abs=0.05)
    assert np.array_equal(
        AnnotatorModel(accuracy=1.0).annotate(y, TREE, np.random.default_rng(0)), y
    )


def test_rounds_spend_the_budget_and_learn(data: dict[str, np.ndarray]) -> None:
    cfg = SimulationConfig(seed_size=10, batch_size=10, budget=50, cv_folds=0)
    res = simulate(
        **data,
        parents=PARENTS,
        strategy=RandomSampling(),
        model_factory=CentroidModel,
        config=cfg,
        seed=0,
    )
    assert res.spent.tolist() == [10, 20, 30, 40, 50]
    assert res.n_relabels.tolist() == [0] * 5
    assert res.metrics["hier_f1"][-1] > 0.8
    assert np.all(res.consensus_accuracy == 1.0)


def test_same_seed_same_seed_set_and_reproducible(data: dict[str, np.ndarray]) -> None:
    cfg = SimulationConfig(seed_size=10, batch_size=10, budget=30, cv_folds=0)
    kw = {**data, "parents": PARENTS, "model_factory": CentroidModel, "config": cfg, "seed": 3}
    a = simulate(strategy=RandomSampling(), **kw)
    b = simulate(strategy=RandomSampling(), **kw)
    u = simulate(strategy=HierarchicalUncertainty(), **kw)
    assert a.metrics["hier_f1"].tolist() == b.metrics["hier_f1"].tolist()
    assert a.metrics["hier_f1"][0] == u.metrics["hier_f1"][0]  # same seed set -> same first model


def test_relabel_or_new_spends_second_opinions_with_noisy_annotators(
    data: dict[str, np.ndarray],
) -> None:
    cfg = SimulationConfig(
        seed_size=40, batch_size=20, budget=120, annotators=AnnotatorModel(accuracy=0.6), cv_folds=2
    )
    kw = {**data, "parents": PARENTS, "model_factory": CentroidModel, "config": cfg, "seed": 0}
    both = simulate(strategy=RelabelOrNew(), **kw)
    relabel = simulate(strategy=RelabelOrNew(mode="relabel"), **kw)
    new = simulate(strategy=RelabelOrNew(mode="new"), **kw)
    assert both.spent[-1] == relabel.spent[-1] == new.spent[-1] == 120
    assert new.n_relabels[-1] == 0
    assert relabel.n_labelled[-1] == 40 and relabel.n_relabels[-1] == 80
    # Second opinions repair labels: the relabel policy ends with the cleanest consensus.
    assert relabel.consensus_accuracy[-1] > new.consensus_accuracy[-1]


def test_relabels_by_votes_and_by_gain_repair_labels(data: dict[str, np.ndarray]) -> None:
    # The vote-posterior quality and the gain rule (accuracy measured on the seed set) both spend
    # second opinions where a 60 %-accurate crowd left wrong labels, and end cleaner than new-only.
    cfg = SimulationConfig(
        seed_size=40, batch_size=20, budget=120, annotators=AnnotatorModel(accuracy=0.6), cv_folds=2
    )
    kw = {**data, "parents": PARENTS, "model_factory": CentroidModel, "seed": 0}
    new = simulate(strategy=RelabelOrNew(mode="new"), config=cfg, **kw)
    votes = simulate(
        strategy=RelabelOrNew(),
        config=replace(cfg, relabel_quality="votes", estimate_weights=False),
        **kw,
    )
    gain = simulate(strategy=RelabelOrNew(rule="gain"), config=cfg, **kw)
    for res in (votes, gain):
        assert res.spent[-1] == 120 and res.n_relabels[-1] > 0
        assert res.consensus_accuracy[-1] > new.consensus_accuracy[-1]


def test_savings_against_random() -> None:
    spent = np.array([10, 20, 30, 40])
    rand = np.array([0.5, 0.6, 0.65, 0.7])
    fast = np.array([0.5, 0.7, 0.72, 0.75])
    assert annotations_to_reach(spent, fast, 0.7) == 20
    assert annotations_to_reach(spent, rand, 0.625) == pytest.approx(25)
    assert annotations_to_reach(spent, rand, 0.9) == float("inf")
    sav = label_savings(spent, fast, spent, rand)
    assert sav["savings"] == pytest.approx(0.5)
    assert label_savings(spent, rand * 0.5, spent, rand)["savings"] == float("-inf")
