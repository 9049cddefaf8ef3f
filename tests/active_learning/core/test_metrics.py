"""Metrics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.core.metrics import (
    evaluate,
    hierarchical_prf,
    leaf_accuracy,
    mean_average_precision,
    per_depth_macro_f1,
    per_node_report,
    predicted_sets,
    top_level_accuracy,
)
from taxonomy.hierarchy import Hierarchy

# 0 A, 1 B (roots); 2 A/a, 3 A/b (children of A); 4 B/c (child of B)
PARENTS = np.array([-1, -1, 0, 0, 1])
H = Hierarchy(PARENTS)


def test_hierarchical_prf_by_hand() -> None:
    # clip 1: true {A, a}, predicted {A, b}: intersect 1, |pred| 2, |true| 2
    # clip 2: true {B, c}, predicted {B}:   intersect 1, |pred| 1, |true| 2
    y = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    s = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    p, r, f = hierarchical_prf(y, s)
    assert p == pytest.approx(2 / 3)
    assert r == pytest.approx(2 / 4)
    assert f == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_predicted_sets_threshold_and_path() -> None:
    probs = np.array([[0.9, 0.2, 0.3, 0.6, 0.1], [0.4, 0.45, 0.1, 0.2, 0.44]])
    thr = predicted_sets(probs, parents=H, threshold=0.5)
    np.testing.assert_array_equal(thr, [[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    path = predicted_sets(probs, parents=H, mode="path")
    np.testing.assert_array_equal(path, [[1, 0, 0, 1, 0], [0, 1, 0, 0, 1]])


def test_per_depth_macro_f1() -> None:
    y = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    s = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    # depth 0: A f1=1, B f1=1 -> 1.0; depth 1 nodes with positives: a (f1 0), c (f1 0) -> 0.0
    assert per_depth_macro_f1(y, s, parents=H) == {0: 1.0, 1: 0.0}


def test_leaf_and_top_level_accuracy() -> None:
    probs = np.array([[0.9, 0.1, 0.3, 0.6, 0.0], [0.3, 0.7, 0.2, 0.1, 0.6]])
    primary = np.array([2, 4])  # clip 1 is A/a (predicted A/b), clip 2 is B/c (right)
    assert leaf_accuracy(probs, primary, parents=H) == 0.5
    assert top_level_accuracy(probs, primary, parents=H) == 1.0
    # Restricting candidates to {a, b} makes the second clip's best candidate a (wrong).
    assert leaf_accuracy(probs, primary, parents=H, candidates=[2, 3]) == 0.0


def test_map_by_hand() -> None:
    y = np.array([[1, 0], [0, 0], [1, 1]])
    p = np.array([[0.9, 0.2], [0.8, 0.1], [0.7, 0.3]])
    # col 0: ranks 0.9(+) 0.8(-) 0.7(+): AP = (1/1 + 2/3)/2; col 1: top is positive: AP = 1
    assert mean_average_precision(y, p) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_evaluate_keys() -> None:
    y = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    out = evaluate(y, y.astype(float), parents=PARENTS, primary=np.array([2, 4]))
    assert out["hier_f1"] == 1.0 and out["leaf_accuracy"] == 1.0 and out["mAP"] == 1.0
    assert out["macro_f1_depth_0"] == 1.0 and out["macro_f1_depth_1"] == 1.0


def test_per_node_report_finds_the_siblings_the_model_confuses() -> None:
    # Rock/{Punk, Metal} told apart perfectly; Jazz/{Bebop, Swing}: every Bebop clip ranked Swing;
    # Folk/Celtic has no sibling.
    h = Hierarchy.from_paths(
        [
            "Rock",
            "Rock/Punk",
            "Rock/Metal",
            "Jazz",
            "Jazz/Bebop",
            "Jazz/Swing",
            "Folk",
            "Folk/Celtic",
        ]
    )
    idx = {n: i for i, n in enumerate(h.names or ())}
    truth = ["Rock/Punk"] * 6 + ["Rock/Metal"] * 6 + ["Jazz/Bebop"] * 5 + ["Jazz/Swing"] * 5
    truth += ["Folk/Celtic"] * 3
    y = np.zeros((len(truth), h.n_nodes), dtype=np.int8)
    p = np.full((len(truth), h.n_nodes), 0.02)
    for i, path in enumerate(truth):
        top = path.split("/")[0]
        y[i, [idx[top], idx[path]]] = 1
        p[i, idx[top]] = 0.95
        guess = "Jazz/Swing" if path == "Jazz/Bebop" else path
        p[i, idx[guess]] = 0.9
        if path.startswith("Jazz"):
            other = "Jazz/Bebop" if guess == "Jazz/Swing" else "Jazz/Swing"
            p[i, idx[other]] = 0.05
    p = h.make_consistent(p)
    r = per_node_report(y, p, parents=h)
    assert r["support"][idx["Rock/Punk"]] == 6 and r["support"][idx["Jazz"]] == 10
    assert r["sibling_accuracy"][idx["Rock/Punk"]] == 1.0
    assert r["sibling_accuracy"][idx["Rock"]] == 1.0 and r["sibling_chance"][idx["Rock"]] == 1 / 3
    assert r["sibling_accuracy"][idx["Jazz/Bebop"]] == 0.0
    assert r["confused_with"][idx["Jazz/Bebop"]] == idx["Jazz/Swing"]
    assert r["confused_rate"][idx["Jazz/Bebop"]] == 1.0
    assert r["confused_with"][idx["Rock/Punk"]] == -1
    assert r["sibling_chance"][idx["Jazz/Bebop"]] == 0.5
    assert np.isnan(r["sibling_accuracy"][idx["Folk/Celtic"]])  # no sibling to confuse
    assert r["recall"][idx["Jazz/Bebop"]] == 0.0 and r["f1"][idx["Jazz/Swing"]] == pytest.approx(
        2 * 5 / (2 * 5 + 5)
    )
    assert r["ap"][idx["Rock/Punk"]] == 1.0
    assert r["precision"][idx["Rock"]] == 1.0
