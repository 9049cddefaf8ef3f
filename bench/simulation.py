"""Active-learning simulation: a fully labelled dataset plays the oracle for simulated annotators.

Each round: form the consensus of the annotations so far, retrain (``model_factory``), record test-
split metrics against the annotations spent (relabels count), then let the strategy pick the next
batch and have simulated annotators answer. Every strategy run with the same ``seed`` gets the same
seed set, the same annotator noise stream per clip, batch size, model and hyper-parameters.

Glossary
--------
N pool clips (candidates for annotation), T test clips, K taxonomy nodes, D feature dimensions.

Pieces used from elsewhere (all plain ``core`` code, no Django):

- consensus of several annotations: :func:`quality.core.consensus.get_consensus` (CROWDLAB over tree
  decisions); with one annotation per clip the annotation itself is the consensus;
- annotator errors: :func:`quality.core.noise.inject_label_noise` (``wrong_sibling`` /
  ``wrong_branch``);
- out-of-sample probabilities for labelled clips: :func:`active_learning.core.cv.cross_val_predict_proba`;
- metrics: :func:`active_learning.core.metrics.evaluate` (hierarchical F1 etc.).

:func:`simulate` takes arrays; :func:`load_corpus_arrays` and :func:`simulate_corpus` run it on the
corpus (``bench.corpus``) with the acquisition benchmarks' model (``HierarchicalClassifier``).

Benchmark code, kept out of the product cores: both science cores (``active_learning.core`` and
``quality.core``) are used here, and neither needs the other for this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition import AcquisitionStrategy, RelabelOrNew
from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.metrics import evaluate
from bench.corpus import feature_key, features, load_corpus
from quality.core.consensus import Annotations, get_consensus
from quality.core.label_issues import label_quality_scores
from quality.core.noise import inject_label_noise
from taxonomy.hierarchy import Hierarchy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

__all__ = [
    "AnnotatorModel",
    "SimulationConfig",
    "SimulationResult",
    "annotations_to_reach",
    "label_savings",
    "load_corpus_arrays",
    "model_factory",
    "simulate",
    "simulate_corpus",
]


class ProbabilisticModel(Protocol):
    def fit(self, X: Any, Y: Any) -> Any: ...

    def predict_proba(self, X: Any) -> Any: ...


@dataclass(frozen=True)
class AnnotatorModel:
    """Simulated annotators: right with probability ``accuracy``; errors biased toward siblings.

    Parameters
    ----------
    accuracy : float
        Probability that an annotation equals the true label set.
    sibling_share : float
        Share of errors that swap a node for a sibling (``wrong_sibling``: the confusion annotators
        actually make); the rest put the clip on another branch (``wrong_branch``). A clip not
        eligible for the drawn type gets the other one.
    n_annotators : int
        Size of the simulated crowd; an annotation goes to one who has not labelled that clip yet.
    """

    accuracy: float = 1.0
    sibling_share: float = 0.75
    n_annotators: int = 10

    def annotate(
        self, true_labels: npt.ArrayLike, hierarchy: Hierarchy, rng: np.random.Generator
    ) -> npt.NDArray[np.int8]:
        """(B, K) answers for (B, K) ancestor-closed true label sets."""
        y = np.asarray(true_labels).astype(np.int8)
        out = y.copy()
        wrong = rng.uniform(size=y.shape[0]) >= self.accuracy
        sibling = rng.uniform(size=y.shape[0]) < self.sibling_share
        for rows, first in ((wrong & sibling, "wrong_sibling"), (wrong & ~sibling, "wrong_branch")):
            idx = np.flatnonzero(rows)
            if idx.size == 0:
                continue
            other = "wrong_branch" if first == "wrong_sibling" else "wrong_sibling"
            noisy, kinds = inject_label_noise(
                y[idx], parents=hierarchy, noise_rate=1.0, types=(first,), seed=rng
            )
            missed = kinds == ""
            if missed.any():
                fixed, _ = inject_label_noise(
                    y[idx[missed]], parents=hierarchy, noise_rate=1.0, types=(other,), seed=rng
                )
                noisy[missed] = fixed
            out[idx] = noisy
        return out


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that must be identical across the strategies being compared.

    Parameters
    ----------
    seed_size : int
        Clips labelled once, chosen uniformly at random (same set for every strategy of one seed).
    batch_size : int
        Annotations acquired per round.
    budget : int
        Total annotations, seed set included; the last batch is cut to fit.
    annotators : AnnotatorModel
    cv_folds : int
        Folds for out-of-sample probabilities of labelled clips when the strategy scores labels
        (:class:`RelabelOrNew`) or clips have several annotations; 0 = use the full model in-sample.
    max_annotations : int
        Per-clip cap passed to :class:`RelabelOrNew`.
    estimate_weights : bool
        Give :class:`RelabelOrNew` the CROWDLAB model and mean annotator weights of each round.
    relabel_quality : {"crowdlab", "votes"}
        How :class:`RelabelOrNew` scores labelled clips: CROWDLAB's consensus quality
        (``quality.core.consensus``), or the quality under
        :func:`~active_learning.core.acquisition.vote_posterior` (the simulation passes the vote
        counts). ``rule="gain"`` always gets the vote counts, and, unless the strategy brings its
        own, the annotators' accuracy measured on the seed set against the truth, as a project
        would measure it on gold clips.
    """

    seed_size: int = 50
    batch_size: int = 50
    budget: int = 500
    annotators: AnnotatorModel = field(default_factory=AnnotatorModel)
    cv_folds: int = 3
    max_annotations: int = 5
    estimate_weights: bool = True
    relabel_quality: Literal["crowdlab", "votes"] = "crowdlab"


@dataclass
class SimulationResult:
    """One learning curve: one row per round, measured before that round's batch.

    Attributes
    ----------
    spent : (R,) int
        Annotations spent so far (relabels count).
    n_labelled : (R,) int
        Distinct clips with at least one annotation.
    n_relabels : (R,) int
        Annotations that were second (or later) opinions.
    consensus_accuracy : (R,) float
        Fraction of labelled clips whose consensus equals the truth.
    metrics : dict of str to (R,) float
        Test-split metrics from :func:`active_learning.core.metrics.evaluate` (``hier_f1`` ...).
    seconds : float
        Wall-clock time of the run.
    """

    strategy: str
    seed: int
    spent: IntArray
    n_labelled: IntArray
    n_relabels: IntArray
    consensus_accuracy: FloatArray
    metrics: dict[str, FloatArray]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "spent": self.spent.tolist(),
            "n_labelled": self.n_labelled.tolist(),
            "n_relabels": self.n_relabels.tolist(),
            "consensus_accuracy": [round(float(v), 4) for v in self.consensus_accuracy],
            "metrics": {k: [round(float(x), 4) for x in v] for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 2),
        }


def _consensus(
    clips: list[int],
    raters: list[int],
    rows: list[npt.NDArray[np.int8]],
    n_pool: int,
    n_raters: int,
    pred_probs: FloatArray | None,
    hier: Hierarchy,
) -> tuple[npt.NDArray[np.int8], FloatArray | None, float, float]:
    """(consensus (N, K), consensus quality (N,) or None, model weight, mean annotator weight)."""
    labels = np.stack(rows)
    clip = np.asarray(clips, dtype=np.int64)
    n_ann = np.bincount(clip, minlength=n_pool)
    cons: npt.NDArray[np.int8]
    if pred_probs is None:
        cons = np.zeros((n_pool, hier.n_nodes), dtype=np.int8)
        cons[clip] = labels  # first round: one annotation per clip
        return cons, None, 1.0, 1.0
    ann = Annotations(clip, np.asarray(raters, dtype=np.int64), labels, n_pool, n_raters)
    res = get_consensus(ann, pred_probs, parents=hier)
    cons = res.consensus_labels.copy()
    single = n_ann == 1
    if not (n_ann >= 2).any():
        # No second opinion anywhere: nothing to weigh, the label is the label.
        cons[clip[single[clip]]] = labels[single[clip]]
    weight = float(np.nanmean(res.annotator_weight)) if res.annotator_weight.size else 1.0
    # Quality on RelabelOrNew's scale (decision self-confidence under the CROWDLAB posterior), not
    # quality.core's default (calibrated) method, so labelled and unlabelled scores stay comparable.
    quality = label_quality_scores(
        res.consensus_labels,
        np.clip(res.post_pred_probs, 0.0, 1.0),
        parents=hier,
        method="self_confidence",
    )
    return cons, np.where(n_ann > 0, quality, np.nan), float(res.model_weight), weight


def simulate(
    *,
    X: npt.ArrayLike,
    Y: npt.ArrayLike,
    X_test: npt.ArrayLike,
    Y_test: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    strategy: AcquisitionStrategy,
    model_factory: Callable[[], ProbabilisticModel],
    config: SimulationConfig,
    seed: int,
    embeddings: npt.ArrayLike | None = None,
    primary_test: npt.ArrayLike | None = None,
    name: str | None = None,
) -> SimulationResult:
    """Run one active-learning simulation.

    Parameters
    ----------
    X : (N, D) float
        Pool features (what the model trains on).
    Y : (N, K) {0, 1}
        True ancestor-closed labels of the pool: the oracle the simulated annotators consult.
    X_test, Y_test : (T, D), (T, K)
        Held-out split for the learning curve.
    parents : (K,) int or Hierarchy
    strategy : AcquisitionStrategy
    model_factory : callable
        ``model_factory()`` returns a fresh estimator with ``fit(X, Y)`` and ``predict_proba(X)``
        giving hierarchy-consistent (n, K) probabilities.
    config : SimulationConfig
    seed : int
        Seed set, annotator noise and strategy randomness. The annotator stream is keyed by
        (seed, clip, opinion number), so two strategies asking for the same opinion get the same
        answer.
    embeddings : (N, E) float, optional
        What diversity strategies measure distance in; default ``X`` standardised.
    primary_test : (T,) int, optional
        True primary node per test clip (adds leaf and top-level accuracy to the metrics).
    name : str, optional
        Label for the result (default ``strategy.name``).

    Returns
    -------
    SimulationResult
    """
    t0 = time.perf_counter()
    hier = parents if isinstance(parents, Hierarchy) else Hierarchy(np.asarray(parents))
    x = np.asarray(X, dtype=np.float32)
    y = np.asarray(Y).astype(np.int8)
    x_test = np.asarray(X_test, dtype=np.float32)
    y_test = np.asarray(Y_test).astype(np.int8)
    n_pool = x.shape[0]
    if embeddings is None:
        emb = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    else:
        emb = np.asarray(embeddings, dtype=np.float32)
    cfg = config
    if cfg.seed_size > n_pool or cfg.budget < cfg.seed_size:
        raise ValueError("seed_size must fit the pool and the budget")
    rng = np.random.default_rng(seed)
    strat_rng = np.random.default_rng([seed, 1])
    n_raters = cfg.annotators.n_annotators
    scores_labels = isinstance(strategy, RelabelOrNew)
    if scores_labels:
        strategy = cast(
            AcquisitionStrategy,
            replace(
                cast(RelabelOrNew, strategy),
                max_annotations=min(cfg.max_annotations, n_raters),
            ),
        )

    clips: list[int] = []
    raters: list[int] = []
    rows: list[npt.NDArray[np.int8]] = []
    used = [set[int]() for _ in range(n_pool)]

    def annotate(batch: IntArray) -> None:
        for i in batch.tolist():
            k = len(used[i])
            ans_rng = np.random.default_rng([seed, 2, i, k])  # same answer for any strategy
            free = [m for m in range(n_raters) if m not in used[i]]
            m = free[int(ans_rng.integers(len(free)))]
            rows.append(cfg.annotators.annotate(y[i : i + 1], hier, ans_rng)[0])
            clips.append(i)
            raters.append(m)
            used[i].add(m)

    annotate(rng.choice(n_pool, size=cfg.seed_size, replace=False).astype(np.int64))
    gain_rule = scores_labels and cast(RelabelOrNew, strategy).rule == "gain"
    if gain_rule and cast(RelabelOrNew, strategy).decision_accuracy is None:
        # The annotators' accuracy as a project would measure it on gold clips: here the seed set's
        # annotations against the truth (Laplace-smoothed), per label set and per decision depth.
        seed_rows, seed_true = np.stack(rows), y[np.asarray(clips)]
        right = np.all(seed_rows == seed_true, axis=1)
        asked = np.ones_like(seed_true, dtype=bool)
        has_parent = hier.parents >= 0
        asked[:, has_parent] = seed_true[:, hier.parents[has_parent]] > 0
        ok = (seed_rows == seed_true) & asked
        by_depth = {
            d: (ok[:, hier.depth == d].sum() + 1.0) / (asked[:, hier.depth == d].sum() + 2.0)
            for d in np.unique(hier.depth).tolist()
        }
        strategy = cast(
            AcquisitionStrategy,
            replace(
                cast(RelabelOrNew, strategy),
                annotator_accuracy=float((right.sum() + 1.0) / (right.size + 2.0)),
                decision_accuracy=tuple(float(by_depth[d]) for d in hier.depth.tolist()),
            ),
        )

    rec_spent: list[int] = []
    rec_lab: list[int] = []
    rec_rel: list[int] = []
    rec_cacc: list[float] = []
    rec_metrics: dict[str, list[float]] = {}
    pred_probs: FloatArray | None = None
    while True:
        n_ann = np.bincount(np.asarray(clips), minlength=n_pool)
        labeled = n_ann > 0
        cons, _, _, _ = _consensus(clips, raters, rows, n_pool, n_raters, pred_probs, hier)
        needs_oos = cfg.cv_folds >= 2 and (scores_labels or (n_ann >= 2).any())
        if needs_oos and labeled.sum() >= 2 * cfg.cv_folds:
            cv = cross_val_predict_proba(
                model_factory,
                x,
                cons,
                parents=hier,
                labeled_mask=labeled,
                n_splits=cfg.cv_folds,
                seed=seed,
            )
            pred_probs, model = cv.pred_probs, cv.model
        else:
            model = model_factory()
            model.fit(x[labeled], cons[labeled])
            pred_probs = np.asarray(model.predict_proba(x), dtype=np.float64)
        spent = len(clips)
        metrics = evaluate(y_test, model.predict_proba(x_test), parents=hier, primary=primary_test)
        rec_spent.append(spent)
        rec_lab.append(int(labeled.sum()))
        rec_rel.append(spent - int(labeled.sum()))
        rec_cacc.append(float(np.mean(np.all(cons[labeled] == y[labeled], axis=1))))
        for key, val in metrics.items():
            rec_metrics.setdefault(key, []).append(float(val))
        if spent >= cfg.budget:
            break
        n = min(cfg.batch_size, cfg.budget - spent)
        kwargs: dict[str, Any] = {}
        active = strategy
        if scores_labels:
            _, quality, w_model, w_ann = _consensus(
                clips, raters, rows, n_pool, n_raters, pred_probs, hier
            )
            kwargs = {"consensus_quality": quality, "n_annotations": n_ann}
            if cfg.relabel_quality == "votes" or gain_rule:
                counts = np.zeros((n_pool, hier.n_nodes), dtype=np.int64)
                np.add.at(counts, np.asarray(clips), np.stack(rows))
                kwargs["label_counts"] = counts
            if cfg.estimate_weights:
                active = cast(
                    AcquisitionStrategy,
                    replace(
                        cast(RelabelOrNew, strategy),
                        model_weight=max(w_model, 1e-3),
                        annotator_weight=max(w_ann, 1e-3),
                    ),
                )
        batch = active.select(
            pred_probs=pred_probs,
            embeddings=emb,
            labeled=labeled,
            n=n,
            parents=hier,
            rng=strat_rng,
            **kwargs,
        )
        annotate(batch)
    return SimulationResult(
        strategy=name or strategy.name,
        seed=seed,
        spent=np.asarray(rec_spent, dtype=np.int64),
        n_labelled=np.asarray(rec_lab, dtype=np.int64),
        n_relabels=np.asarray(rec_rel, dtype=np.int64),
        consensus_accuracy=np.asarray(rec_cacc),
        metrics={k: np.asarray(v) for k, v in rec_metrics.items()},
        seconds=time.perf_counter() - t0,
    )


def annotations_to_reach(spent: npt.ArrayLike, curve: npt.ArrayLike, target: float) -> float:
    """Annotations at which a learning curve first reaches ``target`` (linear interpolation).

    Parameters
    ----------
    spent : (R,) increasing
    curve : (R,) metric values
    target : float

    Returns
    -------
    float
        ``inf`` if the curve never reaches the target.
    """
    s = np.asarray(spent, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    hit = np.flatnonzero(c >= target)
    if hit.size == 0:
        return float("inf")
    j = int(hit[0])
    if j == 0:
        return float(s[0])
    frac = (target - c[j - 1]) / max(c[j] - c[j - 1], 1e-12)
    return float(s[j - 1] + frac * (s[j] - s[j - 1]))


def label_savings(
    spent: npt.ArrayLike,
    curve: npt.ArrayLike,
    random_spent: npt.ArrayLike,
    random_curve: npt.ArrayLike,
) -> dict[str, float]:
    """Label savings against random: ``1 - a_strategy / a_random`` to reach random's final value.

    ``a_random`` is where random's own (mean) curve first reaches its final value, ``a_strategy``
    where the strategy's curve does; curves are means over seeds on a shared ``spent`` grid.

    Returns
    -------
    dict with ``target``, ``a_random``, ``a_strategy`` and ``savings`` (``-inf`` if never reached).
    """
    target = float(np.asarray(random_curve)[-1])
    a_r = annotations_to_reach(random_spent, random_curve, target)
    a_s = annotations_to_reach(spent, curve, target)
    return {
        "target": target,
        "a_random": a_r,
        "a_strategy": a_s,
        "savings": 1.0 - a_s / a_r if np.isfinite(a_s) else float("-inf"),
    }


def mean_curve(
    results: Sequence[SimulationResult], metric: str = "hier_f1"
) -> tuple[IntArray, FloatArray, FloatArray]:
    """(spent grid, mean, std) over runs that share the same ``spent`` grid."""
    spent = results[0].spent
    for r in results:
        if not np.array_equal(r.spent, spent):
            raise ValueError("runs do not share one spent grid")
    vals = np.stack([r.metrics[metric] for r in results])
    return spent, vals.mean(axis=0), vals.std(axis=0)


# --- The corpus runs of the acquisition benchmarks (acq_simulate, acq_kcenter_spaces, ...) ---------

#: The acquisition benchmarks' model: ``HierarchicalClassifier`` with these parameters.
MODEL_PARAMS: dict[str, Any] = {
    "device": "cpu",
    "max_epochs": 20,
    "min_steps": 100,
    "max_steps": 100,
    "seed": 0,
}


def load_corpus_arrays() -> dict[str, Any]:
    """Features, ancestor-closed labels, primary node and split of every clip of the corpus.

    ``logmel-stats`` unless ``$ACQ_FEATURES`` (set by the scripts' ``--features a+b``, so that worker
    processes see it too) names other backends, all from ``bench.corpus``'s feature cache.
    """
    manifest, hier, y, primary = load_corpus()
    key = os.environ.get("ACQ_FEATURES", "")
    x, _ = features(key or "logmel-stats", [str(c) for c in manifest["clip_id"]])
    key = key or feature_key("logmel-stats")  # e.g. logmel-stats-v1
    return {
        "x": x,
        "y": y,
        "primary": primary,
        "split": manifest["split"].to_numpy().astype(str),
        "hier": hier,
        "feature_key": key,
    }


def model_params() -> dict[str, Any]:
    """MODEL_PARAMS with ``--max-steps`` applied (passed to worker processes as ACQ_MAX_STEPS)."""
    steps = int(os.environ.get("ACQ_MAX_STEPS", "0"))
    return {**MODEL_PARAMS, **({"min_steps": steps, "max_steps": steps} if steps else {})}


def model_factory(parents: IntArray) -> Any:
    """A fresh single-threaded ``HierarchicalClassifier`` with :func:`model_params`."""
    import torch

    from active_learning.core.models import HierarchicalClassifier

    torch.set_num_threads(1)
    return HierarchicalClassifier(parents, **model_params())


def simulate_corpus(
    data: dict[str, Any],
    *,
    strategy: AcquisitionStrategy,
    config: SimulationConfig,
    seed: int,
    name: str,
    embeddings: FloatArray | None = None,
) -> SimulationResult:
    """One simulation on :func:`load_corpus_arrays`'s data: the train split is the pool, curves on
    the test split."""
    tr = np.flatnonzero(data["split"] == "train")
    te = np.flatnonzero(data["split"] == "test")
    return simulate(
        X=data["x"][tr],
        Y=data["y"][tr],
        X_test=data["x"][te],
        Y_test=data["y"][te],
        parents=data["hier"],
        strategy=strategy,
        model_factory=partial(model_factory, data["hier"].parents),
        config=config,
        seed=seed,
        primary_test=data["primary"][te],
        name=name,
        embeddings=embeddings,
    )
