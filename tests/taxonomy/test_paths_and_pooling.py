import numpy as np
import pytest

from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import (
    close_downward,
    decisions_made,
    most_probable_descent,
    most_probable_path,
    parent_values,
)
from taxonomy.pooling import EMA_TERMS, ema_terms, worst_decision_ema

# 0 ─ 1 ─ 3          5 ─ 6
#   │   └ 4
#   └ 2
PARENTS = np.array([-1, 0, 0, 1, 1, -1, 5])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_as_hierarchy_passes_a_hierarchy_through_and_builds_one_from_parents() -> None:
    h = Hierarchy(PARENTS)
    assert as_hierarchy(h) is h
    assert as_hierarchy(PARENTS.tolist()).n_nodes == 7


def test_parent_values_and_decisions_made() -> None:
    h = Hierarchy(PARENTS)
    on = np.array([[1, 1, 0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(
        decisions_made(on, h), [[True, True, True, True, True, True, False]]
    )
    v = np.arange(7, dtype=np.float64)[None, :]
    np.testing.assert_array_equal(parent_values(v, h, root=-1.0), [[-1, 0, 0, 1, 1, -1, 5]])


def test_close_downward_turns_off_nodes_below_an_off_parent() -> None:
    h = Hierarchy(PARENTS)
    on = np.array([[0, 1, 0, 1, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(close_downward(on, h), [[0, 0, 0, 0, 0, 1, 1]])


def test_most_probable_path_descends_by_marginal_to_a_leaf() -> None:
    h = Hierarchy(PARENTS)
    p = h.make_consistent(np.array([[0.9, 0.6, 0.3, 0.2, 0.5, 0.4, 0.4]]))
    np.testing.assert_array_equal(most_probable_path(p, h), [[1, 1, 0, 0, 1, 0, 0]])


def test_most_probable_descent_stops_below_min_score_and_keeps_ancestors() -> None:
    h = Hierarchy(PARENTS)
    cond = np.array([[1.0, 0.9, 0.1, 0.3, 0.2, 1.0, 1.0]])
    got = most_probable_descent(np.array([1]), cond, h, min_score=0.5)
    np.testing.assert_array_equal(got, [[1, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        most_probable_descent(np.array([1]), cond, h), [[1, 1, 0, 1, 0, 0, 0]]
    )


def test_marginal_inverts_conditional(rng: np.random.Generator) -> None:
    h = Hierarchy(PARENTS)
    p = h.make_consistent(rng.uniform(0.05, 1.0, size=(50, 7)))
    np.testing.assert_allclose(h.marginal(h.conditional(p)), p, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.8, 0.99, 1.0])
def test_worst_decision_ema_is_cleanlabs_ema_over_descending_scores(
    alpha: float, rng: np.random.Generator
) -> None:
    scores = rng.uniform(size=(20, 30))
    expected = []
    for row in scores:
        s = np.sort(row)[::-1]  # best first, the worst folded in last
        ema = s[0]
        for x in s[1:]:
            ema = alpha * x + (1.0 - alpha) * ema
        expected.append(ema)
    np.testing.assert_allclose(worst_decision_ema(scores, alpha=alpha), expected, atol=1e-7)
    assert ema_terms(alpha, 30) <= EMA_TERMS


def test_worst_decision_ema_overwrite_gives_the_same_scores(rng: np.random.Generator) -> None:
    scores = rng.uniform(size=(20, 30))
    copy = scores.copy()
    kept = worst_decision_ema(scores, alpha=0.8)
    np.testing.assert_array_equal(scores, copy)
    np.testing.assert_array_equal(worst_decision_ema(scores, alpha=0.8, overwrite=True), kept)
    assert worst_decision_ema(np.ones((3, 0)), alpha=0.8).tolist() == [1.0, 1.0, 1.0]
