"""Acquisition strategies select what they promise on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.core.acquisition import (
    AcquisitionStrategy,
    BadgeLike,
    DiversitySampling,
    EmptyPoolError,
    HierarchicalUncertainty,
    PoolSizeError,
    RandomSampling,
    RelabelOrNew,
    activelab_scores,
    available_strategies,
    decision_confidence,
    get_strategy,
    hierarchical_uncertainty,
    k_center_greedy,
)
from active_learning.core.hierarchy import Hierarchy

# 0 A, 1 A/a1, 2 A/a2, 3 B, 4 B/b1, 5 B/b2
PARENTS = np.array([-1, 0, 0, -1, 3, 3])
TREE = Hierarchy(PARENTS)


def confident(n: int, leaf: int, rng: np.random.Generator, sure: float = 0.97) -> np.ndarray:
    """(n, 6) consistent probabilities putting ``sure`` on ``leaf`` and its parent."""
    p = np.full((n, 6), 1 - sure)
    p[:, leaf] = sure
    p[:, PARENTS[leaf]] = sure
    p += rng.uniform(0, 0.01, size=p.shape)
    return TREE.make_consistent(np.clip(p, 0, 1))


def blobs(
    rng: np.random.Generator, n_per: int = 50, n_blobs: int = 6, d: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 20, size=(n_blobs, d))
    x = np.concatenate([c + rng.normal(0, 1, size=(n_per, d)) for c in centres])
    return x, np.repeat(np.arange(n_blobs), n_per)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def all_strategies() -> list[AcquisitionStrategy]:
    return [
        RandomSampling(),
        HierarchicalUncertainty(),
        HierarchicalUncertainty(measure="margin", within_depth="mean", across_depths="max"),
        DiversitySampling(),
        DiversitySampling(method="kmeans++"),
        BadgeLike(),
        BadgeLike(embedding="scaled"),
        RelabelOrNew(),
    ]


def test_uncertainty_picks_the_planted_ambiguous_clips(rng: np.random.Generator) -> None:
    p = confident(200, 1, rng)
    planted = np.array([7, 42, 99, 150, 181])
    # Sibling confusion (a1 vs a2) and branch confusion (A vs B) are both uncertain.
    p[planted[:3]] = [0.98, 0.5, 0.48, 0.02, 0.01, 0.01]
    p[planted[3:]] = [0.5, 0.45, 0.05, 0.5, 0.45, 0.05]
    labeled = np.zeros(200, dtype=bool)
    labeled[[0, 1, 2]] = True
    x = rng.normal(size=(200, 4))
    for measure in ("entropy", "margin", "least_confidence"):
        for pool in ("sum", "mean", "max"):
            strat = HierarchicalUncertainty(measure=measure, within_depth=pool, across_depths=pool)
            picks = strat.select(pred_probs=p, embeddings=x, labeled=labeled, n=5, parents=PARENTS)
            assert set(picks.tolist()) == set(planted.tolist()), (measure, pool)


def test_uncertainty_ranks_branch_doubt_above_sibling_doubt_by_default(
    rng: np.random.Generator,
) -> None:
    p = confident(3, 1, rng)
    p[0] = [0.98, 0.5, 0.48, 0.02, 0.01, 0.01]  # which sibling
    p[1] = [0.5, 0.45, 0.05, 0.5, 0.45, 0.05]  # which branch, then which sibling
    u = hierarchical_uncertainty(p, TREE)
    assert u[1] > u[0] > u[2]


def test_entropy_sum_equals_chain_rule_entropy_of_the_label_set() -> None:
    # One root with two children; independent decisions: H = H(r) + P(r) (H(c1|r) + H(c2|r)).
    parents = np.array([-1, 0, 0])
    p = np.array([[0.5, 0.25, 0.4]])
    h = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))  # noqa: E731
    expected = h(0.5) + 0.5 * (h(0.5) + h(0.8))
    assert hierarchical_uncertainty(p, parents)[0] == pytest.approx(expected)


def test_diversity_covers_every_planted_cluster(rng: np.random.Generator) -> None:
    x, cluster = blobs(rng)
    labeled = np.zeros(len(x), dtype=bool)
    for method in ("kcenter", "kmeans++"):
        picks = DiversitySampling(method=method).select(
            pred_probs=None,
            embeddings=x,
            labeled=labeled,
            n=6,
            parents=PARENTS,
            rng=np.random.default_rng(1),
        )
        assert sorted(cluster[picks].tolist()) == list(range(6)), method


def test_diversity_avoids_clusters_already_labelled(rng: np.random.Generator) -> None:
    x, cluster = blobs(rng)
    labeled = np.isin(cluster, [0, 1, 2]) & (np.arange(len(x)) % 10 == 0)
    picks = DiversitySampling().select(
        pred_probs=None, embeddings=x, labeled=labeled, n=3, parents=PARENTS
    )
    assert sorted(cluster[picks].tolist()) == [3, 4, 5]


def test_k_center_greedy_is_the_farthest_point_rule() -> None:
    x = np.array([[0.0], [1.0], [10.0], [4.0]])
    picks = k_center_greedy(x, candidates=[1, 2, 3], centres=[0], n=3)
    assert picks.tolist() == [2, 3, 1]


def test_badge_combines_uncertainty_and_diversity(rng: np.random.Generator) -> None:
    x, cluster = blobs(rng, n_blobs=6)
    # Every clip is somewhat unsure which sibling under B; cluster 0 is the most unsure of all.
    n = len(x)
    child = np.where(cluster == 0, rng.uniform(0.44, 0.45, n), rng.uniform(0.29, 0.3, n))
    p = TREE.make_consistent(
        np.column_stack(
            [
                np.full(n, 0.02),
                np.full(n, 0.01),
                np.full(n, 0.01),
                np.full(n, 0.98),
                child,
                0.98 - child,
            ]
        )
    )
    labeled = np.zeros(n, dtype=bool)
    u = hierarchical_uncertainty(p, TREE)
    top = HierarchicalUncertainty().select(
        pred_probs=p, embeddings=x, labeled=labeled, n=6, parents=PARENTS
    )
    assert set(cluster[top].tolist()) == {0}  # pure uncertainty piles into one cluster
    for embedding in ("gradient", "scaled"):
        picks = BadgeLike(embedding=embedding).select(
            pred_probs=p,
            embeddings=x,
            labeled=labeled,
            n=6,
            parents=PARENTS,
            rng=np.random.default_rng(3),
        )
        assert sorted(cluster[picks].tolist()) == list(range(6)), embedding
        assert u[picks].mean() > np.median(u), embedding


def test_badge_gradient_distances_match_the_explicit_outer_products(
    rng: np.random.Generator,
) -> None:
    from active_learning.core.acquisition import decision_gradient_factors

    x = rng.normal(size=(5, 3))
    p = TREE.make_consistent(rng.uniform(size=(5, 6)))
    a = decision_gradient_factors(p, TREE)
    g = np.einsum("ik,id->ikd", a, x).reshape(5, -1)
    explicit = ((g[:, None] - g[None]) ** 2).sum(-1)
    gsq = (a**2).sum(1) * (x**2).sum(1)
    implicit = gsq[:, None] + gsq[None] - 2 * (a @ a.T) * (x @ x.T)
    np.testing.assert_allclose(implicit, explicit, atol=1e-9)


def test_relabel_or_new_relabels_the_lowest_quality_labels(rng: np.random.Generator) -> None:
    n = 100
    p = confident(n, 1, rng)
    x = rng.normal(size=(n, 4))
    labeled = np.arange(n) < 50
    quality = np.where(labeled, 0.97, np.nan)
    n_ann = labeled.astype(int)
    bad = np.array([3, 17, 30])
    quality[bad] = [0.55, 0.6, 0.65]
    sel = RelabelOrNew().select_detailed(
        pred_probs=p,
        embeddings=x,
        labeled=labeled,
        n=3,
        parents=PARENTS,
        consensus_quality=quality,
        n_annotations=n_ann,
    )
    assert sel.indices.tolist() == bad.tolist()
    assert sel.relabel.all()
    assert np.all(np.diff(sel.scores) >= 0)


def test_relabel_or_new_prefers_a_new_unsure_clip_over_a_well_agreed_label(
    rng: np.random.Generator,
) -> None:
    n = 60
    p = confident(n, 1, rng)
    p[55] = [0.98, 0.5, 0.48, 0.02, 0.01, 0.01]  # unlabelled and unsure
    labeled = np.arange(n) < 50
    quality = np.where(labeled, 0.97, np.nan)
    quality[10] = 0.6  # labelled with a doubtful consensus
    n_ann = labeled.astype(int)
    n_ann[10] = 1
    n_ann[20] = 3
    quality[20] = 0.6  # equally doubtful but already three opinions: shrunk less toward chance
    sel = RelabelOrNew().select_detailed(
        pred_probs=p,
        embeddings=rng.normal(size=(n, 2)),
        labeled=labeled,
        n=3,
        parents=PARENTS,
        consensus_quality=quality,
        n_annotations=n_ann,
    )
    assert set(sel.indices.tolist()) == {10, 20, 55}
    assert dict(zip(sel.indices.tolist(), sel.relabel.tolist(), strict=True)) == {
        10: True,
        20: True,
        55: False,
    }
    # Same doubtful quality: the clip with one opinion is shrunk further toward chance than the clip
    # with three, so it comes first of the two.
    order = sel.indices.tolist()
    assert order.index(10) < order.index(20)


def test_relabel_or_new_respects_the_annotation_cap(rng: np.random.Generator) -> None:
    n = 10
    p = confident(n, 1, rng)
    labeled = np.ones(n, dtype=bool)
    labeled[9] = False
    quality = np.full(n, 0.99)
    quality[0] = 0.5
    n_ann = np.ones(n, dtype=int)
    n_ann[0] = 3
    strat = RelabelOrNew(max_annotations=3)
    picks = strat.select(
        pred_probs=p,
        embeddings=np.zeros((n, 2)),
        labeled=labeled,
        n=9,
        parents=PARENTS,
        consensus_quality=quality,
        n_annotations=n_ann,
    )
    assert 0 not in picks.tolist()
    with pytest.raises(PoolSizeError):
        strat.select(
            pred_probs=p,
            embeddings=np.zeros((n, 2)),
            labeled=labeled,
            n=10,
            parents=PARENTS,
            consensus_quality=quality,
            n_annotations=n_ann,
        )


def test_activelab_scores_match_the_published_formula() -> None:
    s = activelab_scores(
        confidence=[0.9, 0.9],
        consensus_quality=[0.8, np.nan],
        labeled=[True, False],
        n_annotations=[2, 0],
        model_weight=2.0,
        annotator_weight=1.0,
    )
    assert s[0] == pytest.approx((4 * 0.8 + 0.5) / 5)
    assert s[1] == pytest.approx((2 * 0.9 + 0.5) / 3)


def test_decision_confidence_is_on_the_chance_to_certain_scale(rng: np.random.Generator) -> None:
    p = confident(5, 4, rng, sure=0.999)
    assert np.all(decision_confidence(p, PARENTS) > 0.99)
    half = np.array([[0.5, 0.25, 0.25, 0.5, 0.25, 0.25]])  # every decision a coin flip
    assert decision_confidence(half, PARENTS)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("strategy", all_strategies(), ids=lambda s: f"{s.name}-{s!r}"[:40])
def test_cold_start_needs_no_model_and_is_diverse(
    strategy: AcquisitionStrategy, rng: np.random.Generator
) -> None:
    x, cluster = blobs(rng)
    labeled = np.zeros(len(x), dtype=bool)
    picks = strategy.select(
        pred_probs=None,
        embeddings=x,
        labeled=labeled,
        n=6,
        parents=PARENTS,
        rng=np.random.default_rng(5),
    )
    assert picks.shape == (6,) and len(set(picks.tolist())) == 6
    assert not labeled[picks].any()
    if strategy.name != "random":
        assert sorted(cluster[picks].tolist()) == list(range(6))


@pytest.mark.parametrize("strategy", all_strategies(), ids=lambda s: f"{s.name}-{s!r}"[:40])
def test_deterministic_with_a_seed_and_never_repeats(
    strategy: AcquisitionStrategy, rng: np.random.Generator
) -> None:
    n = 300
    x = rng.normal(size=(n, 5))
    p = TREE.make_consistent(rng.uniform(size=(n, 6)))
    labeled = rng.uniform(size=n) < 0.3
    kwargs = {
        "pred_probs": p,
        "embeddings": x,
        "labeled": labeled,
        "n": 40,
        "parents": PARENTS,
        "consensus_quality": np.where(labeled, rng.uniform(0.5, 1, n), np.nan),
        "n_annotations": labeled.astype(int),
    }
    a = strategy.select(**kwargs, rng=np.random.default_rng(11))
    b = strategy.select(**kwargs, rng=np.random.default_rng(11))
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 40
    if strategy.name != "relabel_or_new":
        assert not labeled[a].any()


@pytest.mark.parametrize("strategy", all_strategies(), ids=lambda s: f"{s.name}-{s!r}"[:40])
def test_impossible_requests_raise_typed_errors(
    strategy: AcquisitionStrategy, rng: np.random.Generator
) -> None:
    x = rng.normal(size=(10, 3))
    labeled = np.arange(10) < 7
    with pytest.raises(PoolSizeError):
        strategy.select(pred_probs=None, embeddings=x, labeled=labeled, n=4, parents=PARENTS)
    with pytest.raises(EmptyPoolError):
        strategy.select(
            pred_probs=None, embeddings=x, labeled=np.ones(10, dtype=bool), n=1, parents=PARENTS
        )
    with pytest.raises(PoolSizeError):
        strategy.select(pred_probs=None, embeddings=x, labeled=labeled, n=-1, parents=PARENTS)
    assert (
        strategy.select(pred_probs=None, embeddings=x, labeled=labeled, n=0, parents=PARENTS).size
        == 0
    )


def test_labeled_may_be_given_as_indices(rng: np.random.Generator) -> None:
    x, cluster = blobs(rng, n_blobs=3)
    picks = DiversitySampling().select(
        pred_probs=None, embeddings=x, labeled=np.flatnonzero(cluster < 2), n=1, parents=PARENTS
    )
    assert cluster[picks[0]] == 2


def test_registry_builds_each_strategy_with_options() -> None:
    assert available_strategies() == [
        "badge",
        "diversity",
        "random",
        "relabel_or_new",
        "uncertainty",
    ]
    strat = get_strategy("uncertainty", measure="margin")
    assert isinstance(strat, HierarchicalUncertainty) and strat.measure == "margin"
    assert isinstance(get_strategy("relabel_or_new"), AcquisitionStrategy)
    with pytest.raises(KeyError, match="known"):
        get_strategy("bald")


def test_decision_confidence_is_on_the_consensus_quality_scale(rng: np.random.Generator) -> None:
    # One scale for RelabelOrNew: the model's confidence in its own label set scores exactly what
    # quality.core gives that label set as a label quality.
    from quality.core.label_issues import label_quality_scores

    parents = np.array([-1, 0, 0, 1, 1, 2, -1, 6, 6, 6, 7, 7, 8, 8, 9, 9, -1, 16])
    tree = Hierarchy(parents)
    p = tree.make_consistent(rng.uniform(size=(200, parents.size)) ** 0.5)
    q = tree.conditional(p)
    own = q >= 0.5
    for node in tree.order:
        if parents[node] >= 0:
            own[:, node] &= own[:, parents[node]]
    expected = label_quality_scores(own.astype(np.int8), p, parents=tree, method="self_confidence")
    np.testing.assert_allclose(decision_confidence(p, tree), expected, atol=1e-12)
    assert np.all(decision_confidence(p, tree, pooling="mean") >= 0.5)


def test_relabel_or_new_modes_restrict_the_same_ranking(rng: np.random.Generator) -> None:
    n = 40
    p = confident(n, 1, rng)
    p[35] = [0.98, 0.5, 0.48, 0.02, 0.01, 0.01]
    labeled = np.arange(n) < 20
    quality = np.where(labeled, 0.97, np.nan)
    quality[5] = 0.55
    kw = {
        "pred_probs": p,
        "embeddings": np.zeros((n, 2)),
        "labeled": labeled,
        "n": 1,
        "parents": PARENTS,
        "consensus_quality": quality,
        "n_annotations": labeled.astype(int),
    }
    assert RelabelOrNew(mode="new").select(**kw).tolist() == [35]
    assert RelabelOrNew(mode="relabel").select(**kw).tolist() == [5]
    both = RelabelOrNew().select(**{**kw, "n": 2})
    assert set(both.tolist()) == {5, 35}
