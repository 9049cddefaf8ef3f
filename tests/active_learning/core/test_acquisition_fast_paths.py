"""The fast acquisition paths select what the plain algorithms select.

k-center greedy prunes with distance bounds (from the labelled clips of each candidate's nearest
group when there are many) and k-means++ samples by rejection from a stale bound (a cheap cover of
the labelled clips when there are many); uncertainty is float32 with per-depth pooling as a matrix
product. Each is checked against a direct float64 implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.core.acquisition import (
    BadgeLike,
    DiversitySampling,
    HierarchicalUncertainty,
    RelabelOrNew,
    distance,
    hierarchical_uncertainty,
    k_center_greedy,
    kcenter,
    kmeans_pp_seeding,
    kmeanspp,
)
from taxonomy.hierarchy import Hierarchy


def plain_min_sq(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared distance from each row to its nearest col, in float64, a few rows at a time."""
    return np.concatenate(
        [((x[r, None, :] - x[None, cols, :]) ** 2).sum(-1).min(1) for r in np.array_split(rows, 64)]
    )


def plain_k_center(x: np.ndarray, cand: np.ndarray, cent: np.ndarray, n: int) -> list[int]:
    """Textbook greedy k-center in float64: update every distance after every pick."""
    d = plain_min_sq(x, cand, cent) if cent.size else None
    picks: list[int] = []
    if d is None:
        first = int(np.argmin(((x[cand] - x[cand].mean(0)) ** 2).sum(1)))
        picks.append(first)
        d = ((x[cand] - x[cand][first]) ** 2).sum(1)
    d = d.copy()
    d[picks] = -1
    while len(picks) < n:
        j = int(np.argmax(d))
        picks.append(j)
        d = np.minimum(d, ((x[cand] - x[cand][j]) ** 2).sum(1))
        d[picks] = -1
    return cand[picks].tolist()


@pytest.mark.parametrize("n_centres", [0, 12, 700])  # 700 > 256: the group bound is used
def test_k_center_greedy_matches_the_plain_rule(n_centres: int) -> None:
    rng = np.random.default_rng(n_centres)
    x = rng.normal(size=(4000 + n_centres, 6)) * rng.uniform(0.5, 3.0, size=6)
    idx = rng.permutation(len(x))
    cent, cand = np.sort(idx[:n_centres]), np.sort(idx[n_centres:])
    picks = k_center_greedy(x, candidates=cand, centres=cent, n=40)
    assert picks.tolist() == plain_k_center(x, cand, cent, 40)


def clustered(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """(n, d) points around k centres, with noise larger than their spread (as the embeddings)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, size=(k, d))
    return means[rng.integers(k, size=n)] + rng.normal(0, 1.5, size=(n, d))


@pytest.mark.parametrize("d", [32, 100])
def test_k_center_with_many_labelled_clips_matches_the_plain_rule(d: int) -> None:
    # 1500 labelled clips in 32-100 dimensions: a farthest-first cover of 256 of them bounded the
    # distances so loosely that the old sampler measured every candidate against every labelled
    # clip; the group bound is tight for most candidates, and the picks are the plain rule's.
    x = clustered(7500, d, 20, seed=d)
    idx = np.random.default_rng(d).permutation(len(x))
    cent, cand = np.sort(idx[:1500]), np.sort(idx[1500:])
    picks = k_center_greedy(x, candidates=cand, centres=cent, n=40)
    assert picks.tolist() == plain_k_center(x, cand, cent, 40)


def test_group_bound_is_an_upper_bound_and_mostly_exact() -> None:
    x = clustered(7500, 32, 20, seed=8)
    cand, cent = np.arange(6000), np.arange(6000, 7500)
    space = distance.euclidean_space(x, cand, cent)
    bound, centres = distance.group_bound(space, 6000 + np.arange(1500))
    assert centres is not None
    exact = plain_min_sq(x, cand, cent)
    assert np.all(bound >= exact * (1 - 1e-5))  # float32 products
    assert np.mean(np.isclose(bound, exact, rtol=1e-5)) > 0.4  # nearest labelled clip in the group


def test_k_center_with_duplicate_labelled_clips_drops_the_empty_groups() -> None:
    # 400 labelled clips on 3 points: most group means start on the same point and stay empty.
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2400, 5))
    x[2000:] = rng.normal(size=(3, 5))[rng.integers(3, size=400)]
    cand, cent = np.arange(2000), np.arange(2000, 2400)
    space = distance.euclidean_space(x, cand, cent)
    bound, _ = distance.group_bound(space, 2000 + np.arange(400))
    assert np.all(np.isfinite(bound))
    picks = k_center_greedy(x, candidates=cand, centres=cent, n=25)
    assert picks.tolist() == plain_k_center(x, cand, cent, 25)


def test_k_center_prefix_widening_and_ties_go_to_the_lowest_index() -> None:
    # Integer grid: many exactly equal distances, so the pruned prefix must widen to see every tie.
    g = np.stack(np.meshgrid(np.arange(40), np.arange(40)), -1).reshape(-1, 2).astype(float)
    cand = np.arange(len(g))
    cent = np.array([], dtype=np.int64)
    space = distance.euclidean_space(g, cand, cent)
    first = (820,)
    picks = kcenter.farthest_first(space, space.min_to(np.array(first)), 30, first)
    d = ((g - g[820]) ** 2).sum(1)
    d[820] = -1
    expected = [820]
    while len(expected) < 30:
        j = int(np.argmax(d))
        expected.append(j)
        d = np.minimum(d, ((g - g[j]) ** 2).sum(1))
        d[expected] = -1
    assert picks.tolist() == expected


@pytest.mark.parametrize("slack", [1.001, 5.0, 1e3])  # tight: prune; loose: widen, then measure all
def test_k_center_with_an_upper_bound_refines_it_exactly(slack: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_300, 4))
    cand, cent = np.arange(20_000), np.arange(20_000, 20_300)
    space = distance.euclidean_space(x, cand, cent)
    exact = space.min_to(np.arange(20_000, 20_300))
    bound = exact * slack + rng.uniform(0, 0.01, size=exact.size)
    centres = np.arange(20_000, 20_300)
    loose = kcenter.farthest_first(space, bound, 25, (), centres)
    assert loose.tolist() == kcenter.farthest_first(space, exact, 25).tolist()
    assert loose.tolist() == plain_k_center(x, cand, cent, 25)


def d2_probabilities(x: np.ndarray, cand: np.ndarray, cent: np.ndarray) -> np.ndarray:
    d = ((x[cand, None, :] - x[None, cent, :]) ** 2).sum(-1).min(1)
    return d / d.sum()


@pytest.mark.parametrize("n_centres", [5, 300])  # 300 > 2 x 64: the loose cover bound is used
def test_kmeans_pp_draws_follow_the_d2_law(n_centres: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6 + n_centres, 3))
    x[:6] *= 2.0
    cand, cent = np.arange(6), np.arange(6, 6 + n_centres)
    space = distance.euclidean_space(x, cand, cent)
    dist, centres = kmeanspp.centre_bound(space, np.arange(6, 6 + n_centres), 64)
    assert (centres is None) == (n_centres <= 128)
    draws = 4000
    first = np.zeros(6)
    pairs = np.zeros((6, 6))
    for s in range(draws):
        a, b = kmeanspp.dsq_sample(space, dist, 2, np.random.default_rng(s), (), centres)
        first[a] += 1
        pairs[a, b] += 1
    p1 = d2_probabilities(x, cand, cent)
    np.testing.assert_allclose(first / draws, p1, atol=0.03)
    # Second pick given the first: D² to the centres and the first pick.
    a = int(np.argmax(first))
    p2 = d2_probabilities(x, cand, np.append(cent, a))
    np.testing.assert_allclose(pairs[a] / pairs[a].sum(), p2, atol=0.05)


@pytest.mark.parametrize(("n_labelled", "seed"), [(300, 2), (600, 10)])
def test_kmeans_pp_with_a_bound_too_loose_to_sample_from_keeps_the_d2_law(
    n_labelled: int, seed: int
) -> None:
    # A bound that accepts ~0.1 %: with 300 labelled clips the sampler gives up on it and measures
    # everyone; with 600 (> 256) it first swaps in the group bound and measures exactly only if that
    # still rejects too often. Either way the draws follow the D² law.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6 + n_labelled, 3))
    cand, cent = np.arange(6), np.arange(6, 6 + n_labelled)
    space = distance.euclidean_space(x, cand, cent)
    dist = space.min_to(cent) * 1e3 * np.array([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])  # not ∝ D²
    draws = 500
    first = np.zeros(6)
    for s in range(draws):
        picks = kmeanspp.dsq_sample(space, dist, 3, np.random.default_rng(s), (), cent)
        assert len(set(picks.tolist())) == 3
        first[picks[0]] += 1
    np.testing.assert_allclose(first / draws, d2_probabilities(x, cand, cent), atol=0.07)


def plain_rejection_draws(
    x: np.ndarray, cand: np.ndarray, cent: np.ndarray, bound: np.ndarray, n: int, seed: int
) -> list[int]:
    """The rejection sampler step by step in float64: propose j ∝ bound (the same bound all along,
    so a proposal already picked is rejected), accept it with probability D²_j / bound_j."""
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    cum = np.cumsum(bound)
    while len(picks) < n:
        j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), cand.size - 1)
        if j in picks or bound[j] <= 0.0:
            continue
        d = min(bound[j], float(plain_min_sq(x, cand[[j]], np.append(cent, cand[picks]))[0]))
        if rng.random() * bound[j] < d:
            picks.append(j)
    return cand[picks].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_pp_with_many_labelled_clips_draws_what_the_plain_sampler_draws(seed: int) -> None:
    # 1500 labelled clips (> 2 x 64): proposals from the cover bound, each checked against every
    # labelled clip. Same seed, same bound: the same draws as the step-by-step sampler.
    x = clustered(2100, 8, 10, seed=seed)
    cand, cent = np.arange(600), np.arange(600, 2100)
    space = distance.euclidean_space(x, cand, cent)
    bound, centres = kmeanspp.centre_bound(space, 600 + np.arange(1500), kmeanspp.KMEANSPP_COVER)
    assert centres is not None
    picks = kmeans_pp_seeding(
        x, candidates=cand, centres=cent, n=8, rng=np.random.default_rng(seed)
    )
    assert picks.tolist() == plain_rejection_draws(x, cand, cent, bound, 8, seed)


def test_kmeans_pp_skips_stale_duplicates_and_falls_back_to_uniform() -> None:
    # 200 copies of one far point and 3 others: after one copy is taken the rest weigh nothing, but
    # the stale bound still proposes them (rejections, then a refresh); the last pick is uniform.
    x = np.zeros((204, 2))
    x[:200] = [50.0, 50.0]
    x[200:203] = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    cand, cent = np.arange(203), np.array([203])
    for seed in range(5):
        picks = kmeans_pp_seeding(
            x, candidates=cand, centres=cent, n=5, rng=np.random.default_rng(seed)
        )
        assert picks[0] < 200
        assert sorted(picks[1:4].tolist()) == [200, 201, 202]
        assert picks[4] < 200 and picks[4] != picks[0]


def test_cold_start_with_many_labelled_clips_covers_the_unlabelled_clusters() -> None:
    # 600 labelled clips (> 2 x 256): both samplers start from the cover bound.
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 20, size=(8, 10))
    x = np.concatenate([c + rng.normal(0, 1, size=(120, 10)) for c in centres])
    cluster = np.repeat(np.arange(8), 120)
    labeled = cluster < 5
    strategies = [
        DiversitySampling(),
        DiversitySampling(method="kmeans++"),
        HierarchicalUncertainty(),
        HierarchicalUncertainty(cold_start="kcenter"),
        BadgeLike(),
        RelabelOrNew(),
    ]
    for strategy in strategies:
        kw = {"pred_probs": None, "embeddings": x, "labeled": labeled, "n": 3, "parents": [-1]}
        a = strategy.select(**kw, rng=np.random.default_rng(9))
        b = strategy.select(**kw, rng=np.random.default_rng(9))
        assert a.tolist() == b.tolist(), strategy  # deterministic under a seed
        assert sorted(cluster[a].tolist()) == [5, 6, 7], strategy


def test_euclidean_distances_survive_a_large_shared_offset() -> None:
    # float32 products on raw embeddings far from the origin would cancel catastrophically.
    rng = np.random.default_rng(4)
    x = 1e4 + rng.normal(size=(500, 8))
    picks = k_center_greedy(x, candidates=np.arange(490), centres=np.arange(490, 500), n=10)
    assert picks.tolist() == plain_k_center(x, np.arange(490), np.arange(490, 500), 10)


def test_gradient_space_distances_match_the_explicit_outer_products() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 6)).astype(np.float32)
    h = rng.normal(size=(50, 4)).astype(np.float32)
    g = np.einsum("ik,id->ikd", a.astype(float), h.astype(float)).reshape(50, -1)
    cols = np.array([3, 17, 40])
    explicit = ((g[:, None] - g[None, cols]) ** 2).sum(-1).min(1)
    space = distance.Gradient(a, h)
    np.testing.assert_allclose(space.min_to(cols), explicit, rtol=1e-4, atol=1e-4)
    rows = np.array([0, 5, 49])
    np.testing.assert_allclose(space.min_to(cols, rows=rows), explicit[rows], rtol=1e-4, atol=1e-4)


def plain_uncertainty(p: np.ndarray, tree: Hierarchy, measure: str, within: str, across: str):
    """Decision by decision in float64, as the definition reads."""
    q, w = tree.conditional(p), np.ones_like(p)
    w[:, tree.parents >= 0] = p[:, tree.parents[tree.parents >= 0]]
    pool = {
        "sum": lambda v, wt: (v * wt).sum(1),
        "max": lambda v, wt: (v * wt).max(1) if v.shape[1] else np.zeros(len(v)),
        "mean": lambda v, wt: (v * wt).sum(1) / np.maximum(wt.sum(1), 1e-12),
    }
    depths = tree.max_depth + 1
    if measure == "margin":
        groups = [tree.roots] + [c for c in tree.children if c.size]
        u = np.zeros((len(p), len(groups)))
        for g, kids in enumerate(groups):
            if kids.size == 1:  # a lone child against its own complement
                top = np.maximum(q[:, kids[0]], 1 - q[:, kids[0]])
                u[:, g] = 1 - (top - (1 - top))
            else:
                qk = np.sort(q[:, kids], axis=1)[:, ::-1]
                u[:, g] = 1 - (qk[:, 0] - qk[:, 1])
        gw = w[:, [kids[0] for kids in groups]]
        gd = tree.depth[[kids[0] for kids in groups]]
        per = [pool[within](u[:, gd == d], gw[:, gd == d]) for d in range(depths)]
    else:
        qc = np.clip(q, 1e-12, 1 - 1e-12)
        ent = -(qc * np.log2(qc) + (1 - qc) * np.log2(1 - qc))
        u = ent if measure == "entropy" else 2 * np.minimum(q, 1 - q)
        per = [pool[within](u[:, tree.depth == d], w[:, tree.depth == d]) for d in range(depths)]
    per_depth = np.stack(per, 1)
    return pool[across](per_depth, np.ones_like(per_depth))


@pytest.mark.parametrize("measure", ["entropy", "margin", "least_confidence"])
@pytest.mark.parametrize("pool", ["sum", "mean", "max"])
def test_float32_uncertainty_matches_the_float64_definition(measure: str, pool: str) -> None:
    rng = np.random.default_rng(6)
    parents = np.array([-1, 0, 0, 0, 1, 1, 2, -1, 7, 8, 8, -1, 11, 11, 12])
    tree = Hierarchy(parents)
    p = tree.make_consistent(rng.uniform(size=(400, parents.size)) ** 0.7)
    got = hierarchical_uncertainty(p, tree, measure=measure, within_depth=pool, across_depths=pool)  # type: ignore[arg-type]
    want = plain_uncertainty(p, tree, measure, pool, pool)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
