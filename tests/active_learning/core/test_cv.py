"""cross_val_predict_proba: every labelled row is predicted by a model that did not see it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from active_learning.core.cv import cross_val_predict_proba, stratification_keys
from active_learning.core.models import HierarchicalClassifier, synthetic_hierarchical_data
from taxonomy.hierarchy import Hierarchy

PARENTS = np.array([-1, -1, 0, 0, 1, 1], dtype=np.int64)


class Memoriser:
    """Returns a training row's own labels when it has seen the row, 0.5 everywhere otherwise."""

    def fit(self, X: np.ndarray, Y: np.ndarray) -> Memoriser:
        self.seen_ = {x.tobytes(): y.astype(float) for x, y in zip(X, Y, strict=True)}
        self.k_ = Y.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.stack([self.seen_.get(x.tobytes(), np.full(self.k_, 0.5)) for x in X])


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = synthetic_hierarchical_data(PARENTS, 120, 6, seed=0, p_stop=0.0)
    return x, y


def test_out_of_sample_with_memoriser(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    labeled = np.ones(len(x), dtype=bool)
    labeled[100:] = False
    res = cross_val_predict_proba(
        Memoriser, x, y, parents=PARENTS, labeled_mask=labeled, n_splits=5, seed=1
    )
    # Labelled rows: the fold model never saw them, so it can only answer 0.5.
    np.testing.assert_array_equal(res.pred_probs[:100], 0.5)
    assert res.out_of_sample[:100].all() and not res.out_of_sample[100:].any()
    assert set(res.fold[:100].tolist()) == set(range(5)) and (res.fold[100:] == -1).all()
    assert np.bincount(res.fold[:100]).min() >= 15
    # Unlabelled rows come from the full model, which was trained on labelled rows only.
    np.testing.assert_array_equal(res.pred_probs[100:], 0.5)
    assert isinstance(res.model, Memoriser) and len(res.model.seen_) == 100
    assert len(res.fold_metrics) == 5 and "hier_f1" in res.metrics


def test_unlabelled_rows_get_full_model_probabilities(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    labeled = np.arange(len(x)) < 100
    xx = np.concatenate([x, x[:5]])  # duplicates of labelled rows, unlabelled
    yy = np.concatenate([y, np.zeros((5, y.shape[1]), y.dtype)])
    res = cross_val_predict_proba(
        Memoriser, xx, yy, parents=PARENTS, labeled_mask=np.r_[labeled, np.zeros(5, bool)]
    )
    np.testing.assert_array_equal(res.pred_probs[-5:], y[:5])


def test_groups_never_straddle_folds(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    groups = np.arange(len(x)) // 4
    res = cross_val_predict_proba(Memoriser, x, y, parents=PARENTS, groups=groups, seed=0)
    for g in np.unique(groups):
        assert len(set(res.fold[groups == g].tolist())) == 1


def test_stratification_keys_merge_rare_strata() -> None:
    h = Hierarchy(PARENTS)
    y = h.ancestor_close(np.eye(6)[[2] * 10 + [3] * 10 + [4] * 2 + [5] * 1])
    keys = stratification_keys(y, parents=h, min_count=5)
    assert set(keys[:20].tolist()) == {2, 3}
    assert (keys[20:] == -1).all()  # 4 and 5 are rare, their root 1 too: shared stratum


def test_with_real_estimator_beats_chance(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data

    def factory() -> Any:
        return HierarchicalClassifier(PARENTS, min_steps=40, max_steps=40, device="cpu")

    res = cross_val_predict_proba(
        factory, x, y, parents=PARENTS, n_splits=3, primary=np.argmax(y[:, 2:], 1) + 2
    )
    assert np.isfinite(res.pred_probs).all()
    assert res.metrics["leaf_accuracy"] > 0.5  # 4 leaves: chance 0.25


def test_too_few_rows() -> None:
    with pytest.raises(ValueError):
        cross_val_predict_proba(
            Memoriser, np.zeros((3, 2)), np.eye(6)[:3], parents=PARENTS, n_splits=5
        )
