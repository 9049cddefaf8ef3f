"""HierarchicalClassifier: learns, stays consistent, follows the scikit-learn contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from active_learning.core.metrics import leaf_accuracy
from active_learning.core.models import HierarchicalClassifier, synthetic_hierarchical_data
from taxonomy.hierarchy import Hierarchy

# 3 roots; root 0 has 2 children each with 2 leaves, root 1 has 3 leaves, root 2 is a leaf.
PARENTS = np.array([-1, -1, -1, 0, 0, 3, 3, 4, 4, 1, 1, 1], dtype=np.int64)
H = Hierarchy(PARENTS)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    x, y, prim = synthetic_hierarchical_data(PARENTS, 600, 16, seed=7, signal=0.8, p_stop=0.0)
    xt, yt, pt = synthetic_hierarchical_data(
        PARENTS, 300, 16, seed=7, sample_seed=99, signal=0.8, p_stop=0.0
    )
    return x, y, prim, xt, yt, pt


def _fast(**kw: object) -> HierarchicalClassifier:
    return HierarchicalClassifier(PARENTS, min_steps=60, max_steps=60, device="cpu", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["conditional", "flat"])
@pytest.mark.parametrize("hidden", [0, 16])
def test_learns_and_is_consistent(data: tuple[np.ndarray, ...], method: str, hidden: int) -> None:
    x, y, _, xt, _, pt = data
    clf = _fast(method=method, hidden=hidden).fit(x, y)
    p = clf.predict_proba(xt)
    assert p.shape == (xt.shape[0], H.n_nodes)
    assert np.all((p >= 0) & (p <= 1))
    has_par = PARENTS >= 0
    assert np.all(p[:, has_par] <= p[:, PARENTS[has_par]] + 1e-9)
    # 8 leaves: chance is 1/8; the signal is strong, so demand a wide margin.
    assert leaf_accuracy(p, pt, parents=H) > 0.6


def test_unfitted_predict_proba_raises() -> None:
    with pytest.raises(NotFittedError):
        HierarchicalClassifier(PARENTS).predict_proba(np.zeros((2, 3)))


def test_init_stores_params_only_and_fit_returns_self(data: tuple[np.ndarray, ...]) -> None:
    clf = _fast(weight_decay=0.1)
    assert not any(k.endswith("_") for k in vars(clf))
    params = clf.get_params()
    assert params["weight_decay"] == 0.1
    twin = clone(clf)
    assert twin.get_params()["weight_decay"] == 0.1
    x, y, *_ = data
    assert clf.fit(x, y) is clf
    assert hasattr(clf, "module_") and hasattr(clf, "mean_")


def test_softmax_used_for_single_label_branches() -> None:
    x, y, _ = synthetic_hierarchical_data(PARENTS, 200, 8, seed=1, p_stop=0.0, p_extra=0.0)
    clf = _fast(method="conditional").fit(x, y)
    # One full path per clip: every sibling group under a parent is single-label, so each becomes
    # a softmax; roots have no parent and stay sigmoids.
    groups = {tuple(g.tolist()) for g in clf.softmax_groups_}
    assert groups == {(3, 4), (5, 6), (7, 8), (9, 10, 11)}
    assert not _fast(method="conditional", siblings="sigmoid").fit(x, y).softmax_groups_


def test_nan_labels_are_ignored(data: tuple[np.ndarray, ...]) -> None:
    x, y, _, xt, _, pt = data
    yn = y.astype(np.float32)
    rng = np.random.default_rng(0)
    yn[rng.random(yn.shape) < 0.1] = np.nan
    p = _fast().fit(x, yn).predict_proba(xt)
    assert np.all(np.isfinite(p))
    assert leaf_accuracy(p, pt, parents=H) > 0.5


def test_deterministic_with_seed(data: tuple[np.ndarray, ...]) -> None:
    x, y, _, xt, *_ = data
    a = _fast(seed=3).fit(x, y).predict_proba(xt)
    b = _fast(seed=3).fit(x, y).predict_proba(xt)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        _fast().fit(np.zeros((5, 3)), np.zeros((5, 4)))
    clf = _fast().fit(np.random.default_rng(0).normal(size=(10, 3)), np.eye(12)[np.arange(10) % 12])
    with pytest.raises(ValueError):
        clf.predict_proba(np.zeros((2, 4)))
