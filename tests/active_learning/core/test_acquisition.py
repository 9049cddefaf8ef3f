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
    relabel_gain,
    vote_posterior,
)
from taxonomy.hierarchy import Hierarchy

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


def _votes(*label_sets: list[int]) -> np.ndarray:
    """(6,) label counts of ancestor-closed label sets given as node lists."""
    counts = np.zeros(6, dtype=int)
    for nodes in label_sets:
        counts[nodes] += 1
    return counts


def test_relabel_by_votes_asks_a_third_opinion_where_two_disagree(rng: np.random.Generator) -> None:
    # Every clip: the model is sure of A/a1. Clips 0-9 have two annotations agreeing on A/a1, clip 4
    # instead a 1-1 split A/a1 vs A/a2: a third opinion decides it, one more on the others changes
    # nothing. With consensus_quality alone (all 0.9 here) nothing tells them apart.
    n = 10
    p = confident(n, 1, rng, sure=0.8)
    counts = np.tile(_votes([0, 1], [0, 1]), (n, 1))
    counts[4] = _votes([0, 1], [0, 2])
    kw = {
        "pred_probs": p,
        "embeddings": np.zeros((n, 2)),
        "labeled": np.ones(n, dtype=bool),
        "n": 1,
        "parents": PARENTS,
        "n_annotations": np.full(n, 2),
        "consensus_quality": np.full(n, 0.9),
    }
    sel = RelabelOrNew().select_detailed(**kw, label_counts=counts)
    assert sel.indices.tolist() == [4]
    post = vote_posterior(
        pred_probs=p, label_counts=counts, n_annotations=np.full(n, 2), parents=PARENTS
    )
    assert post[4, 1] == pytest.approx((p[4, 1] / p[4, 0] + 1) / 3 * post[4, 0])
    assert post[0, 1] > 0.9 > 0.7 > post[4, 1]


def test_relabel_by_votes_targets_lone_labels_the_model_contradicts(
    rng: np.random.Generator,
) -> None:
    # Clips 0-29 each have one label; the model confirms all but clips 7 (labelled B/b1, model sure of
    # A/a1: the wrong branch) and 12 (labelled A/a2, model sure of A/a1: a sibling). The wrong-branch
    # label comes first, the sibling second; unlabelled clips 30-39 the model is sure of come after.
    n = 40
    p = confident(n, 1, rng)
    labeled = np.arange(n) < 30
    counts = np.zeros((n, 6), dtype=int)
    counts[labeled] = _votes([0, 1])
    counts[7] = _votes([3, 4])
    counts[12] = _votes([0, 2])
    sel = RelabelOrNew().select_detailed(
        pred_probs=p,
        embeddings=np.zeros((n, 2)),
        labeled=labeled,
        n=3,
        parents=PARENTS,
        n_annotations=labeled.astype(int),
        label_counts=counts,
    )
    assert sel.indices[:2].tolist() == [7, 12]
    assert sel.relabel[:2].all()


def test_vote_posterior_is_the_model_without_votes(rng: np.random.Generator) -> None:
    p = confident(5, 4, rng, sure=0.7)
    post = vote_posterior(
        pred_probs=p, label_counts=np.zeros((5, 6)), n_annotations=np.zeros(5), parents=TREE
    )
    np.testing.assert_allclose(post, p, atol=1e-9)


def test_relabel_gain_is_the_value_of_one_more_vote() -> None:
    # Decision accuracy 0.9 (logit step ln 9). 0: a lone A/a1 label the model confirms; 1: a lone
    # B/b1 label against a model that puts 0.9 on A (the prior cancels the vote: even odds on the
    # root decisions); 2: two annotators agree on A/a1; 3: a 1-1 split A/a1 vs A/a2 under a model
    # that cannot tell a1 from a2.
    p = np.array(
        [
            [0.9, 0.85, 0.05, 0.1, 0.05, 0.05],
            [0.9, 0.45, 0.45, 0.1, 0.05, 0.05],
            [0.9, 0.85, 0.05, 0.1, 0.05, 0.05],
            [0.98, 0.49, 0.49, 0.02, 0.01, 0.01],
        ]
    )
    counts = np.stack(
        [_votes([0, 1]), _votes([3, 4]), _votes([0, 1], [0, 1]), _votes([0, 1], [0, 2])]
    )
    g = relabel_gain(
        pred_probs=p,
        label_counts=counts,
        n_annotations=np.array([1, 1, 2, 2]),
        parents=TREE,
        decision_accuracy=0.9,
        temperature=1.0,
    )
    assert g[1] == pytest.approx(0.4, abs=0.01)  # even odds: the next vote decides, right 90 %
    assert g[3] == pytest.approx(0.4, abs=0.03)
    assert g[0] < 0.01 and g[2] < 0.01  # no single vote can flip these (only decisions
    # below a root the posterior all but rules out, weighted by that tiny reach)


def test_relabel_or_new_by_gain_relabels_only_what_beats_a_new_label(
    rng: np.random.Generator,
) -> None:
    # 30 lone labels; the model puts 0.9 on A/a1 for every clip and three labels (7, 12, 20) say
    # B/b1: one label in ten against a 0.9 model, so the temperature fitted to the votes stays near
    # 1 and those three sit at even odds on the root decisions.
    n = 40
    p = confident(n, 1, rng, sure=0.9)
    labeled = np.arange(n) < 30
    counts = np.zeros((n, 6), dtype=int)
    counts[labeled] = _votes([0, 1])
    counts[[7, 12, 20]] = _votes([3, 4])
    kw = {
        "pred_probs": p,
        "embeddings": np.zeros((n, 2)),
        "labeled": labeled,
        "n": 4,
        "parents": PARENTS,
        "n_annotations": labeled.astype(int),
        "label_counts": counts,
    }
    # Votes right 90 % per decision, whole label sets 75 %: a new label nets 0.5 right labels, each
    # of the three relabels about 2 x 0.4.
    strat = RelabelOrNew(rule="gain", annotator_accuracy=0.75, decision_accuracy=0.9)
    sel = strat.select_detailed(**kw)
    assert sorted(sel.indices[:3].tolist()) == [7, 12, 20]
    assert sel.relabel.tolist() == [True, True, True, False]
    # Votes no more reliable per decision than per label set: one opinion never beats a new label.
    weak = RelabelOrNew(rule="gain", annotator_accuracy=0.75, decision_accuracy=0.75)
    assert not weak.select_detailed(**kw).relabel.any()


def test_relabel_gain_tempers_a_model_more_confident_than_the_votes(
    rng: np.random.Generator,
) -> None:
    # The model is 0.999 sure of A/a1 but one lone label in five says B/b1: untempered, a single
    # vote could never outweigh it; tempered to the votes, the contradicted labels gain.
    n = 50
    p = confident(n, 1, rng, sure=0.999)
    counts = np.tile(_votes([0, 1]), (n, 1))
    counts[::5] = _votes([3, 4])
    kw = {
        "pred_probs": p,
        "label_counts": counts,
        "n_annotations": np.ones(n),
        "parents": TREE,
        "decision_accuracy": 0.9,
    }
    assert relabel_gain(**kw, temperature=1.0)[::5].max() < 0.02
    assert relabel_gain(**kw)[::5].min() > 0.1
