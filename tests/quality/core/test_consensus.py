from __future__ import annotations

import numpy as np
import pytest

from quality.core.consensus import Annotations, ConsensusResult, get_consensus, majority_vote
from quality.core.noise import inject_label_noise, random_paths, simulate_pred_probs
from taxonomy.hierarchy import Hierarchy

ACCURACY = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])


def _annotate(
    h: Hierarchy, truth: np.ndarray, *, overlap_rate: float, seed: int
) -> list[tuple[int, int, np.ndarray]]:
    """Each clip labelled by 1 annotator, or by 3 with probability ``overlap_rate``; an annotator
    of accuracy a gives the true set with probability a, else one typed error."""
    rng = np.random.default_rng(seed)
    records = []
    for n in range(truth.shape[0]):
        k = 3 if rng.random() < overlap_rate else 1
        for m in rng.choice(ACCURACY.size, size=k, replace=False):
            row = truth[n]
            if rng.random() > ACCURACY[m]:
                row = inject_label_noise(
                    truth[n : n + 1], parents=h, noise_rate=1.0, seed=int(rng.integers(1 << 30))
                )[0][0]
            records.append((n, int(m), row))
    return records


@pytest.fixture(scope="module")
def setting(tree: Hierarchy) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, np.ndarray]]]:
    truth = random_paths(2000, parents=tree, seed=21, multi_label_rate=0.2)
    probs = simulate_pred_probs(truth, parents=tree, seed=22)
    return truth, probs, _annotate(tree, truth, overlap_rate=0.3, seed=23)


def _error(labels: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.any(labels != truth, axis=1)))


def test_consensus_beats_majority_vote_and_ranks_annotators(tree: Hierarchy, setting) -> None:  # type: ignore[no-untyped-def]
    truth, probs, records = setting
    ann = Annotations.from_records(records, n_clips=truth.shape[0])
    res = get_consensus(ann, probs, parents=tree)
    mv = majority_vote(ann, probs, parents=tree)
    assert _error(res.consensus_labels, truth) < 0.75 * _error(mv, truth)
    assert not tree.not_ancestor_closed(res.consensus_labels).any()
    # quality follows the planted accuracy
    assert np.all(np.diff(res.annotator_quality) < 0.02)
    assert res.annotator_quality[0] > res.annotator_quality[-1] + 0.05
    assert res.annotator_weight[0] > res.annotator_weight[-1]
    # consensus quality ranks wrong consensus first
    wrong = np.any(res.consensus_labels != truth, axis=1)
    assert res.consensus_quality[wrong].mean() < res.consensus_quality[~wrong].mean()
    assert np.all((res.annotator_agreement >= 0) & (res.annotator_agreement <= 1))


def test_one_annotator_per_clip_still_works(tree: Hierarchy, setting) -> None:  # type: ignore[no-untyped-def]
    truth, probs, records = setting
    seen: set[int] = set()
    single = [r for r in records if not (r[0] in seen or seen.add(r[0]))]  # type: ignore[func-returns-value]
    ann = Annotations.from_records(single, n_clips=truth.shape[0], n_annotators=ACCURACY.size)
    res = get_consensus(ann, probs, parents=tree)
    given = np.stack([r[2] for r in single])
    assert _error(res.consensus_labels, truth) < _error(given, truth)
    assert res.annotator_quality[0] > res.annotator_quality[-1]
    assert np.all(res.annotator_agreement[res.num_annotations == 1] <= 1)


def test_dense_round_trip_and_validation(tree: Hierarchy) -> None:
    k = tree.n_nodes
    row = np.zeros(k, dtype=np.int8)
    row[[0, 4]] = 1
    ann = Annotations.from_records([(0, 1, row), (2, 0, row)], n_clips=3, n_annotators=2)
    dense = ann.to_dense()
    assert dense.shape == (3, 2, k) and np.isnan(dense[1]).all()
    back = Annotations.from_dense(dense)
    assert back.clip.tolist() == [0, 2] and back.annotator.tolist() == [1, 0]
    with pytest.raises(ValueError, match="twice"):
        Annotations.from_records([(0, 0, row), (0, 0, row)])
    with pytest.raises(ValueError, match="pred_probs"):
        get_consensus(ann, np.ones((3, k - 1)), parents=tree)
    bad = row.copy()
    bad[0] = 0
    with pytest.raises(ValueError, match="ancestor-closed"):
        get_consensus([(0, 0, bad)], np.full((1, k), 0.5), parents=tree)
    with pytest.raises(ValueError, match="partly NaN"):
        d = np.zeros((1, 1, 3))
        d[0, 0, 1] = np.nan
        Annotations.from_dense(d)


def test_model_weight_survives_overlap_that_only_routing_created(tree: Hierarchy) -> None:
    """One annotator per clip, then a second opinion on 10 % of the clips: either the ones the
    detector routed (where the model disagreed with the first label) or a random 10 %. CROWDLAB's
    rule ("overlap") judges the model only on the multi-annotated clips, so routing alone drives
    the weight of a weak model to zero; estimating it on all labelled clips ("all", the default)
    keeps it at least where random overlap puts it, and the routed clips get fixed."""
    from quality.core import label_quality_scores

    n = 3000
    truth = random_paths(n, parents=tree, seed=31, multi_label_rate=0.2)
    # A weak model, like the corpus one (near chance between siblings).
    probs = simulate_pred_probs(
        truth, parents=tree, seed=32, root_signal=1.0, child_signal=0.3, noise=1.5
    )
    rng = np.random.default_rng(33)

    def opinion(rows: np.ndarray) -> np.ndarray:
        out = truth[rows].copy()
        for j, row in enumerate(rows):
            if rng.random() > 0.75:
                out[j] = inject_label_noise(
                    truth[row : row + 1],
                    parents=tree,
                    noise_rate=1.0,
                    seed=int(rng.integers(1 << 30)),
                )[0][0]
        return out

    first = opinion(np.arange(n))
    first_ann = rng.integers(6, size=n)
    second = opinion(np.arange(n))
    second_ann = (first_ann + 1 + rng.integers(5, size=n)) % 6
    routed = np.argsort(label_quality_scores(first, probs, parents=tree), kind="stable")[: n // 10]
    random_rows = rng.choice(n, size=n // 10, replace=False)
    records = [(int(i), int(first_ann[i]), first[i]) for i in range(n)]
    res: dict[tuple[str, str], ConsensusResult] = {}
    for name, rows in (("routed", routed), ("random", random_rows)):
        ann = Annotations.from_records(
            records + [(int(c), int(second_ann[c]), second[c]) for c in rows],
            n_clips=n,
            n_annotators=6,
        )
        res[name, "all"] = get_consensus(ann, probs, parents=tree)
        res[name, "overlap"] = get_consensus(ann, probs, parents=tree, model_weight_from="overlap")
    w = {key: r.model_weight for key, r in res.items()}
    assert w["routed", "overlap"] < 0.01  # the collapse "all" avoids
    assert w["routed", "all"] > 0.05
    assert w["routed", "all"] >= 0.9 * w["random", "all"]
    cons = res["routed", "all"].consensus_labels
    assert _error(cons[routed], truth[routed]) < 0.6 * _error(first[routed], truth[routed])
    # ... and the weak model does not overrule the lone annotators of the other clips wholesale
    single = np.setdiff1d(np.arange(n), routed)
    assert _error(cons[single], truth[single]) <= _error(first[single], truth[single]) + 0.01
    assert not tree.not_ancestor_closed(cons).any()
