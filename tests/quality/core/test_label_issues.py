from __future__ import annotations

import numpy as np
import pytest
from cleanlab.multilabel_classification import get_label_quality_scores
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score

from quality.core import (
    ISSUE_TYPES,
    check_label_structure,
    decision_scores,
    find_label_issues,
    label_quality_scores,
)
from quality.core.noise import NOISE_TYPES
from taxonomy.hierarchy import Hierarchy

from .conftest import NoisyData


def test_recall_and_precision_at_budget_equal_to_error_count(noisy_data: NoisyData) -> None:
    d = noisy_data
    budget = int(d.is_error.sum())
    issues = find_label_issues(d.noisy, d.pred_probs, parents=d.h, budget=budget)
    assert len(issues) == budget
    hits = d.is_error[issues.clip]
    # budget == number of errors, so precision and recall are the same number here
    assert hits.mean() >= 0.75
    assert np.all(np.diff(issues.score) >= 0), "ranked most suspect first"


def test_issue_type_and_suspect_node_are_right_for_most_found_errors(noisy_data: NoisyData) -> None:
    d = noisy_data
    issues = find_label_issues(d.noisy, d.pred_probs, parents=d.h, budget=int(d.is_error.sum()))
    hit = d.is_error[issues.clip]
    clips = issues.clip[hit]
    assert (issues.issue_type[hit] == d.kinds[clips]).mean() >= 0.8
    changed = d.noisy != d.true
    assert changed[clips, issues.node[hit]].mean() >= 0.9
    assert np.array_equal(issues.depth, d.h.depth[issues.node])
    for kind in NOISE_TYPES:
        found = hit & (d.kinds[issues.clip] == kind)
        if found.sum() >= 10:
            assert (issues.issue_type[found] == kind).mean() >= 0.6, kind


def test_suggested_labels_are_closed_and_mostly_restore_the_truth(noisy_data: NoisyData) -> None:
    d = noisy_data
    issues = find_label_issues(d.noisy, d.pred_probs, parents=d.h, budget=int(d.is_error.sum()))
    assert not d.h.not_ancestor_closed(issues.suggested_labels).any()
    hit = d.is_error[issues.clip]
    exact = np.all(issues.suggested_labels[hit] == d.true[issues.clip[hit]], axis=1)
    assert exact.mean() >= 0.6


def test_conditional_scoring_beats_flat_cleanlab_on_sibling_swaps(noisy_data: NoisyData) -> None:
    d = noisy_data
    ours = label_quality_scores(d.noisy, d.pred_probs, parents=d.h)
    flat = get_label_quality_scores([np.flatnonzero(r).tolist() for r in d.noisy], d.pred_probs)
    mask = (d.kinds == "wrong_sibling") | ~d.is_error
    target = d.is_error[mask]
    assert average_precision_score(target, -ours[mask]) > average_precision_score(
        target, -flat[mask]
    )


def _flat_data(
    seed: int, *, n: int = 1500, k: int = 12, skill: np.ndarray | float = 1.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat multi-label data (K roots): truth, noisy labels (3 % of decisions flipped), probs."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, k)) < 0.25
    logits = np.where(truth, 1.0, -1.0) * skill + rng.normal(0, 1.3, (n, k))
    probs = 1 / (1 + np.exp(-logits))
    labels = truth.copy()
    flip = rng.random((n, k)) < 0.03
    labels[flip] = ~labels[flip]
    return truth, labels, probs


def test_flat_labels_rank_like_cleanlab() -> None:
    """The flat reduction of ``self_confidence`` is cleanlab's multi-label score, exactly."""
    _, labels, probs = _flat_data(5)
    parents = np.full(labels.shape[1], -1)
    ours = label_quality_scores(
        labels.astype(int), probs, parents=parents, method="self_confidence"
    )
    theirs = get_label_quality_scores([np.flatnonzero(r).tolist() for r in labels], probs)
    rho = spearmanr(ours, theirs).statistic
    assert rho > 0.999
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_flat_calibrated_agrees_with_cleanlab_where_nodes_are_alike() -> None:
    """Default method on flat data where every node is equally well modelled and calibrated: the
    per-node calibration and thresholds are then near-constant across nodes, so the ranking must
    stay close to cleanlab's (same worst decision per clip), and find errors as well."""
    _, labels, probs = _flat_data(5)
    parents = np.full(labels.shape[1], -1)
    ours = label_quality_scores(labels.astype(int), probs, parents=parents)
    theirs = get_label_quality_scores([np.flatnonzero(r).tolist() for r in labels], probs)
    assert spearmanr(ours, theirs).statistic > 0.9
    truth, _, _ = _flat_data(5)
    err = np.any(labels != truth, axis=1)
    ap_ours = average_precision_score(err, -ours)
    ap_theirs = average_precision_score(err, -theirs)
    assert ap_ours > 0.95 * ap_theirs


def test_flat_calibrated_beats_cleanlab_when_node_skill_differs() -> None:
    """Where the model is sharp on some nodes and near chance on others, uncalibrated
    self-confidences of the weak nodes swamp the pooled score; per-node calibration and
    thresholds put the nodes on one scale, which must rank the flipped labels markedly better."""
    k = 12
    skill = np.where(np.arange(k) < 6, 3.0, 0.3)
    truth, labels, probs = _flat_data(7, n=3000, k=k, skill=skill)
    parents = np.full(k, -1)
    err = np.any(labels != truth, axis=1)
    ours = label_quality_scores(labels.astype(int), probs, parents=parents)
    theirs = get_label_quality_scores([np.flatnonzero(r).tolist() for r in labels], probs)
    assert average_precision_score(err, -ours) > 1.1 * average_precision_score(err, -theirs)


def test_without_budget_the_threshold_finds_most_errors(noisy_data: NoisyData) -> None:
    d = noisy_data
    issues = find_label_issues(d.noisy, d.pred_probs, parents=d.h)
    assert d.is_error[issues.clip].sum() >= 0.85 * d.is_error.sum()
    assert len(issues) < 0.3 * d.noisy.shape[0]
    assert set(issues.issue_type.tolist()) <= set(ISSUE_TYPES)


@pytest.mark.parametrize("budget", [0, 1, 7, 10_000])
def test_budget_caps_the_number_of_issues(noisy_data: NoisyData, budget: int) -> None:
    d = noisy_data
    issues = find_label_issues(d.noisy, d.pred_probs, parents=d.h, budget=budget)
    assert len(issues) == min(budget, d.noisy.shape[0])
    scores = label_quality_scores(d.noisy, d.pred_probs, parents=d.h)
    if budget:
        assert np.array_equal(issues.clip, np.argsort(scores, kind="stable")[:budget])
    assert len(issues.records()) == len(issues)


def test_decisions_below_unlabelled_parents_are_not_scored() -> None:
    parents = [-1, 0, 0, -1, 3, 3]
    labels = np.array([[1, 1, 0, 0, 0, 0]])
    probs = np.array([[0.9, 0.8, 0.1, 0.3, 0.29, 0.01]])
    scores, active = decision_scores(labels, probs, parents=parents, method="self_confidence")
    assert active.tolist() == [[True, True, True, True, False, False]]
    assert scores[0, 4] == 1.0 and scores[0, 5] == 1.0
    np.testing.assert_allclose(scores[0, :4], [0.9, 0.8 / 0.9, 1 - 0.1 / 0.9, 0.7])
    for method in ("calibrated", "normalized"):
        scores, _ = decision_scores(labels, probs, parents=parents, method=method)  # type: ignore[arg-type]
        assert scores[0, 4] == 1.0 and scores[0, 5] == 1.0
        assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("method", ["calibrated", "self_confidence", "normalized"])
def test_several_errors_rank_before_one(method: str) -> None:
    parents = np.full(6, -1)
    rng = np.random.default_rng(3)
    clean = (rng.random((200, 6)) < 0.5).astype(int)
    probs = np.where(clean == 1, 0.8, 0.2) + rng.uniform(-0.1, 0.1, clean.shape)
    probs[:2] = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    clean[:2] = [[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]]  # one error vs three
    s = label_quality_scores(clean, probs, parents=parents, method=method)  # type: ignore[arg-type]
    assert s[1] < s[0]
    assert s[0] < np.min(s[2:])


def test_structural_check_finds_unclosed_and_out_of_range_rows() -> None:
    h = Hierarchy(np.array([-1, 0, 1, -1]))
    dense = np.array([[1, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 2]])
    rep = check_label_structure(dense, parents=h)
    assert rep.not_ancestor_closed.tolist() == [False, True, False]
    assert rep.invalid_value.tolist() == [False, False, True]
    assert rep.missing_ancestors[1].tolist() == [0, 1]
    assert rep.bad_rows.tolist() == [1, 2] and not rep.ok
    listed = check_label_structure([[0, 1], [3, 9], [2]], parents=h)
    assert listed.out_of_range.tolist() == [False, True, False]
    assert listed.not_ancestor_closed.tolist() == [False, False, True]
    assert check_label_structure([[0], [3]], parents=h).ok


def test_bad_inputs_raise_clear_value_errors() -> None:
    parents = [-1, 0, 0]
    good_y = np.array([[1, 1, 0]])
    good_p = np.array([[0.9, 0.5, 0.3]])
    with pytest.raises(ValueError, match="pred_probs has 2 columns"):
        label_quality_scores(good_y[:, :2], good_p[:, :2], parents=parents)
    with pytest.raises(ValueError, match="labels shape"):
        label_quality_scores(np.ones((2, 3)), good_p, parents=parents)
    with pytest.raises(ValueError, match="2-d"):
        label_quality_scores(good_y, good_p[0], parents=parents)
    with pytest.raises(ValueError, match="ancestor-closed"):
        label_quality_scores(np.array([[0, 1, 0]]), good_p, parents=parents)
    with pytest.raises(ValueError, match="0/1"):
        label_quality_scores(np.array([[1, 0.5, 0]]), good_p, parents=parents)
    with pytest.raises(ValueError, match="hierarchy-consistent"):
        label_quality_scores(good_y, np.array([[0.4, 0.5, 0.3]]), parents=parents)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_quality_scores(good_y, np.array([[1.2, 0.5, 0.3]]), parents=parents)
    with pytest.raises(ValueError, match="budget"):
        find_label_issues(good_y, good_p, parents=parents, budget=-1)
    with pytest.raises(ValueError, match="method"):
        label_quality_scores(good_y, good_p, parents=parents, method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        check_label_structure(np.ones((2, 4)), parents=parents)
