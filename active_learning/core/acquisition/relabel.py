"""Relabel or new: ActiveLab's one scale for a second opinion and a new label, vote posteriors and
the expected gain of one more vote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt

from active_learning.core.acquisition.base import (
    BoolArray,
    ColdStart,
    FloatArray,
    IntArray,
    Request,
    check_request,
    top_n,
)
from active_learning.core.acquisition.diversity import diversity_pick
from active_learning.core.acquisition.uncertainty import decision_confidence
from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import parent_values


def activelab_scores(
    *,
    confidence: npt.ArrayLike,
    consensus_quality: npt.ArrayLike,
    labeled: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    model_weight: float = 1.0,
    annotator_weight: float = 1.0,
    prior: float = 0.5,
) -> FloatArray:
    """ActiveLab's unified score (lower = the next annotation is worth more), reimplemented.

    For a labelled clip i with ``n_i`` annotations the score shrinks its consensus quality toward the
    chance level ``prior`` with the weight of one more (average) annotator::

        s_i = (W_i · quality_i + w_a · prior) / (W_i + w_a),   W_i = n_i · w_a + w_m

    so a clip with many agreeing annotations is hard to beat. For an unlabelled clip only the model
    speaks::

        s_i = (w_m · confidence_i + w_a · prior) / (w_m + w_a)

    This is Goh & Mueller's ActiveLab (cleanlab ``get_active_learning_scores``) with the per-class
    prior ``1/K`` replaced by the per-decision chance level 0.5 and one shared annotator weight.

    Parameters
    ----------
    confidence : (N,) float
        Model confidence per clip (:func:`decision_confidence`); used for unlabelled clips.
    consensus_quality : (N,) float
        Consensus quality per clip on the same scale; used for labelled clips (NaN elsewhere is fine).
    labeled : (N,) bool
    n_annotations : (N,) int
    model_weight, annotator_weight : float
        CROWDLAB-style trust in the model and in an average annotator (both > 0).
    prior : float
        Chance-level quality.

    Returns
    -------
    (N,) float64
    """
    conf = np.asarray(confidence, dtype=np.float64)
    qual = np.asarray(consensus_quality, dtype=np.float64)
    lab = np.asarray(labeled, dtype=bool)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    wm, wa = float(model_weight), float(annotator_weight)
    if wm <= 0 or wa <= 0:
        raise ValueError("model_weight and annotator_weight must be positive")
    big_w = n_ann * wa + wm
    labelled_score = (big_w * np.nan_to_num(qual, nan=prior) + wa * prior) / (big_w + wa)
    unlabelled_score = (wm * conf + wa * prior) / (wm + wa)
    return np.where(lab, labelled_score, unlabelled_score)


def vote_posterior(
    *,
    pred_probs: npt.ArrayLike,
    label_counts: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    model_weight: float = 1.0,
    annotator_weight: float = 1.0,
) -> FloatArray:
    """Marginals of the model and the annotators' votes pooled decision by decision (CROWDLAB's form).

    For each parent->child decision with model conditional ``q = P(k | parent)``, ``v_on``
    annotations that switch k on and ``v`` annotations that made the decision (those with the
    parent on; every annotation for a root)::

        P(k | parent, votes) = (w_m · q + w_a · v_on) / (w_m + w_a · v)

    i.e. :func:`quality.core.consensus.get_consensus`'s posterior with hard votes and given weights.
    A clip nobody labelled keeps the model's probabilities. :func:`decision_confidence` of the
    result is the quality of the consensus (the posterior's own label set), the score ActiveLab
    gives a labelled clip: with equal weights a lone label the model contradicts, or a 1-1 split,
    comes out near chance and a label two annotators agree on near 1. (CROWDLAB's own quality,
    from its estimated weights, loses that ordering where the weights collapse: on the corpus
    (log-mel + structure features, an always-new run, 160-720 lone labels) both weights sit at
    their floor and its quality does not rank wrong labels above right ones, ROC AUC 0.47-0.55,
    where the model's self-confidence in the label gives 0.64-0.68.)

    Parameters
    ----------
    pred_probs : (N, K) float
        Hierarchy-consistent model probabilities (out-of-sample for labelled clips).
    label_counts : (N, K) int
        Per clip and node, how many of its annotations (ancestor-closed label sets) have the node on.
    n_annotations : (N,) int
    parents : (K,) int or Hierarchy
    model_weight, annotator_weight : float
        Trust in the model and in one annotation (both > 0).

    Returns
    -------
    (N, K) float64
        Hierarchy-consistent posterior marginals.
    """
    hier = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    on = np.asarray(label_counts, dtype=np.float64)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    if on.shape != p.shape or n_ann.shape != (p.shape[0],):
        raise ValueError(
            f"label_counts {on.shape} and n_annotations {n_ann.shape} do not match pred_probs "
            f"{p.shape}"
        )
    wm, wa = float(model_weight), float(annotator_weight)
    if wm <= 0 or wa <= 0:
        raise ValueError("model_weight and annotator_weight must be positive")
    q, _ = hier.decision_probabilities(p)
    made = parent_values(on, hier, root=n_ann[:, None])  # votes cast on each decision
    post = (wm * q + wa * on) / (wm + wa * made)
    marg = hier.marginal(post)
    return marg


def _vote_temperature(logit: FloatArray, on: FloatArray, made: FloatArray) -> float:
    """Temperature T that best predicts the votes cast from ``logit / T`` (binomial NLL).

    ActiveLab temperature-scales the model before weighing it against annotators; an overconfident
    prior would put many lone labels at even odds and ask for opinions that only confirm them.
    """
    rows = made > 0
    if not rows.any():
        return 1.0
    z, k, m = logit[rows], on[rows], made[rows]
    temps = np.geomspace(0.25, 16.0, 49)
    nll = [
        float(np.sum(m * np.logaddexp(0.0, z / t) - k * z / t)) for t in temps
    ]  # -log-likelihood of k "on" votes of m under sigmoid(z / t), up to a constant
    return float(temps[int(np.argmin(nll))])


def relabel_gain(
    *,
    pred_probs: npt.ArrayLike,
    label_counts: npt.ArrayLike,
    n_annotations: npt.ArrayLike,
    parents: npt.ArrayLike | Hierarchy,
    decision_accuracy: float | npt.ArrayLike,
    temperature: float | None = None,
) -> FloatArray:
    """Expected gain in the probability that a clip's consensus is right from one more annotation.

    Per parent->child decision k, the model's conditional ``q`` is the prior (temperature-scaled to
    the votes cast, as ActiveLab scales the model) and each annotation a vote that is right with
    probability ``a_k = decision_accuracy[k]`` (naive Bayes: Dawid-Skene with one symmetric
    annotator)::

        logit P(k on | parent on, votes) = logit q / T + (v_on - v_off) · logit a_k

    The consensus takes the likelier side, so it is right with ``max(P, 1 - P)``. One more vote (on
    with probability ``P a_k + (1 - P)(1 - a_k)``) moves the logit by ``± logit a_k``; the gain is
    the expected ``max`` after it less the ``max`` now: the value of information of the annotation,
    zero unless the vote can flip the decision, at most ``a_k - 1/2`` (even odds). A decision weighs
    by the posterior probability that it is asked (its parent is on); a clip scores its largest
    weighted gain. A lone label the model confidently contradicts, or a 1-1 split the model cannot
    break, sits near even odds and gains most; a label two annotators agree on, or that the model
    confirms, gains nothing.

    Parameters
    ----------
    pred_probs : (N, K) float
        Hierarchy-consistent, out-of-sample model probabilities (the prior).
    label_counts : (N, K) int
        Per clip and node, how many of its annotations have the node on.
    n_annotations : (N,) int
    parents : (K,) int or Hierarchy
    decision_accuracy : float or (K,) float
        Probability in (0.5, 1) that an annotation gets decision k right (higher than the
        probability that the whole label set is right: an error touches one or two decisions).
    temperature : float, optional
        Divides the model's logits; default: the one that best predicts the votes cast.

    Returns
    -------
    (N,) float64
        In [0, max(a) - 1/2].
    """
    hier = as_hierarchy(parents)
    acc = np.broadcast_to(np.asarray(decision_accuracy, dtype=np.float64), (hier.n_nodes,))
    if np.any(acc <= 0.5) or np.any(acc >= 1.0):
        raise ValueError("decision_accuracy must lie in (0.5, 1)")
    p = np.asarray(pred_probs, dtype=np.float64)
    on = np.asarray(label_counts, dtype=np.float64)
    n_ann = np.asarray(n_annotations, dtype=np.float64)
    if on.shape != p.shape or n_ann.shape != (p.shape[0],):
        raise ValueError(
            f"label_counts {on.shape} and n_annotations {n_ann.shape} do not match pred_probs "
            f"{p.shape}"
        )
    q, _ = hier.decision_probabilities(p)
    made = parent_values(on, hier, root=n_ann[:, None])  # votes cast on each decision
    step = np.log(acc / (1.0 - acc))
    q = np.clip(q, 1e-6, 1.0 - 1e-6)
    prior = np.log(q / (1.0 - q))
    prior /= _vote_temperature(prior, on, made) if temperature is None else float(temperature)
    logit = prior + (2.0 * on - made) * step

    def sure(x: FloatArray) -> FloatArray:
        return cast(FloatArray, 1.0 / (1.0 + np.exp(-np.abs(x))))

    post = 1.0 / (1.0 + np.exp(-logit))
    p_on = post * acc + (1.0 - post) * (1.0 - acc)
    gain = p_on * sure(logit + step) + (1.0 - p_on) * sure(logit - step) - sure(logit)
    marg = hier.marginal(post)
    reach = parent_values(marg, hier, root=1.0)
    out: FloatArray = np.clip((reach * gain).max(axis=1, initial=0.0), 0.0, None)
    return out


@dataclass(frozen=True)
class RelabelOrNewSelection:
    """What :meth:`RelabelOrNew.select_detailed` returns.

    Attributes
    ----------
    indices : (n,) int64
        Ranked indices into [0, N), most valuable first.
    relabel : (n,) bool
        True where the index is a labelled clip (ask for another opinion), False for a new clip.
    scores : (n,) float64
        The ActiveLab scores of the picks (ascending).
    """

    indices: IntArray
    relabel: BoolArray
    scores: FloatArray


@dataclass
class RelabelOrNew:
    """One ranking over labelled and unlabelled clips: a second opinion or a new label, whichever is worth more.

    Labelled clips are scored by the consensus quality of their current labels, unlabelled ones by the
    model's confidence (:func:`decision_confidence`), both shrunk toward chance by
    :func:`activelab_scores`; the lowest scores come first. ``consensus_quality`` and
    ``n_annotations`` are required once a model exists, unless ``label_counts`` ((N, K) int: per
    clip and node, the annotations with the node on) is passed: then labelled clips are scored by
    their quality under :func:`vote_posterior` instead. Labelled clips with ``max_annotations``
    annotations are never proposed again.

    Measured on the corpus (``bench/results/acq_simulate_800_relabel.md``: 75 %-accurate
    annotators, 800 annotations, 5 seeds) no variant beats "always label new" by more than the
    noise, and neither does an oracle that relabels exactly the wrong labels (+0.01 hF1, paired
    se 0.01): with this model at this budget a second opinion is worth about as much as a new clip.

    Parameters
    ----------
    model_weight, annotator_weight : float
        Weights for :func:`activelab_scores` (CROWDLAB estimates them; pass them in).
    max_annotations : int
        Cap on annotations per clip.
    prior : float
        Chance-level quality that scores are shrunk toward.
    confidence_pooling : {"ema", "mean"}
        How the unlabelled clips' confidence is pooled (:func:`decision_confidence`). Keep it on
        the scale of ``consensus_quality``: ``"ema"`` matches
        ``quality.core.consensus.get_consensus(...).consensus_quality``.
    mode : {"both", "new", "relabel"}
        ``"both"`` (the point of this strategy); ``"new"`` and ``"relabel"`` restrict the same
        ranking to unlabelled or to labelled clips: the "always label new" and "always relabel"
        policies it is benchmarked against.
    cold_start : {"kmeans++", "kcenter"}
        With no model: new clips only, chosen for diversity.
    rule : {"activelab", "gain"}
        ``"activelab"`` (default): one ranking by :func:`activelab_scores`. ``"gain"``: a labelled
        clip is asked again when one more opinion is worth more than a new label, counted in right
        labels with a wrong label costing ``c = noise_cost`` of them: a new label adds
        ``a - (1 - a) c`` (``a = annotator_accuracy``, the chance that a whole label set is right),
        a relabel ``g (1 + c)`` (``g`` its :func:`relabel_gain`, one wrong label made right). At
        ``c = 1``: relabel where ``g > a - 1/2``. Relabels go by descending gain, the rest of the
        batch to new clips by :func:`activelab_scores`. Needs ``label_counts``,
        ``annotator_accuracy`` and ``decision_accuracy``.
    annotator_accuracy : float, optional
        Probability that an annotation's whole label set is right (``rule="gain"``).
    decision_accuracy : float or tuple of K floats, optional
        Probability that an annotation gets one decision right (:func:`relabel_gain`).
    noise_cost : float
        Worth lost to a wrong label, in right labels (``rule="gain"``); 1 counts both alike.
    """

    model_weight: float = 1.0
    annotator_weight: float = 1.0
    max_annotations: int = 5
    prior: float = 0.5
    confidence_pooling: Literal["ema", "mean"] = "ema"
    mode: Literal["both", "new", "relabel"] = "both"
    cold_start: ColdStart = "kmeans++"
    rule: Literal["activelab", "gain"] = "activelab"
    annotator_accuracy: float | None = None
    decision_accuracy: float | tuple[float, ...] | None = None
    noise_cost: float = 1.0
    name: ClassVar[str] = "relabel_or_new"

    def select(
        self,
        *,
        pred_probs: npt.ArrayLike | None,
        embeddings: npt.ArrayLike,
        labeled: npt.ArrayLike,
        n: int,
        parents: npt.ArrayLike | Hierarchy,
        consensus_quality: npt.ArrayLike | None = None,
        n_annotations: npt.ArrayLike | None = None,
        rng: np.random.Generator | None = None,
        label_counts: npt.ArrayLike | None = None,
    ) -> IntArray:
        return self.select_detailed(
            pred_probs=pred_probs,
            embeddings=embeddings,
            labeled=labeled,
            n=n,
            parents=parents,
            consensus_quality=consensus_quality,
            n_annotations=n_annotations,
            rng=rng,
            label_counts=label_counts,
        ).indices

    def select_detailed(
        self,
        *,
        pred_probs: npt.ArrayLike | None,
        embeddings: npt.ArrayLike,
        labeled: npt.ArrayLike,
        n: int,
        parents: npt.ArrayLike | Hierarchy,
        consensus_quality: npt.ArrayLike | None = None,
        n_annotations: npt.ArrayLike | None = None,
        rng: np.random.Generator | None = None,
        label_counts: npt.ArrayLike | None = None,
    ) -> RelabelOrNewSelection:
        """As :meth:`select`, with the relabel flag and score of each pick."""
        emb = np.asarray(embeddings)
        n_clips = emb.shape[0] if emb.ndim == 2 else 0
        n_ann = (
            np.zeros(n_clips, dtype=np.int64)
            if n_annotations is None
            else np.asarray(n_annotations, dtype=np.int64)
        )
        if n_ann.shape != (n_clips,):
            raise ValueError(f"n_annotations has shape {n_ann.shape}, expected ({n_clips},)")
        cold = pred_probs is None

        if self.mode not in ("both", "new", "relabel"):
            raise ValueError(f"unknown mode {self.mode!r}")

        def candidates(mask: BoolArray) -> BoolArray:
            relabel = mask & (n_ann < self.max_annotations)
            if cold or self.mode == "new":
                return ~mask
            return relabel if self.mode == "relabel" else ~mask | relabel

        def n_candidates(mask: BoolArray) -> int:
            return int(candidates(mask).sum())

        req = check_request(
            pred_probs=pred_probs,
            embeddings=emb,
            labeled=labeled,
            n=n,
            parents=parents,
            n_candidates=n_candidates,
        )
        if req.pred_probs is None:
            picks = diversity_pick(req, np.flatnonzero(~req.labeled), self.cold_start, rng)
            return RelabelOrNewSelection(
                picks, np.zeros(picks.size, dtype=bool), np.full(picks.size, np.nan)
            )
        if label_counts is not None:
            quality = decision_confidence(
                vote_posterior(
                    pred_probs=req.pred_probs,
                    label_counts=label_counts,
                    n_annotations=n_ann,
                    parents=req.hierarchy,
                    model_weight=self.model_weight,
                    annotator_weight=self.annotator_weight,
                ),
                req.hierarchy,
                pooling=self.confidence_pooling,
            )
            consensus_quality = np.where(req.labeled, quality, np.nan)
        if consensus_quality is None:
            raise ValueError("RelabelOrNew needs consensus_quality once a model exists")
        quality = np.asarray(consensus_quality, dtype=np.float64)
        if quality.shape != (n_clips,):
            raise ValueError(f"consensus_quality has shape {quality.shape}, expected ({n_clips},)")
        if np.any(req.labeled & np.isnan(quality)):
            raise ValueError("consensus_quality is NaN for a labelled clip")
        scores = activelab_scores(
            confidence=decision_confidence(
                req.pred_probs, req.hierarchy, pooling=self.confidence_pooling
            ),
            consensus_quality=quality,
            labeled=req.labeled,
            n_annotations=n_ann,
            model_weight=self.model_weight,
            annotator_weight=self.annotator_weight,
            prior=self.prior,
        )
        cand = np.flatnonzero(candidates(req.labeled))
        if self.rule == "gain":
            return self._select_by_gain(req, scores, cand, n_ann, label_counts, rng)
        if self.rule != "activelab":
            raise ValueError(f"unknown rule {self.rule!r}")
        picks = top_n(-scores, cand, req.n, rng)
        return RelabelOrNewSelection(picks, req.labeled[picks], scores[picks])

    def _select_by_gain(
        self,
        req: Request,
        scores: FloatArray,
        cand: IntArray,
        n_ann: IntArray,
        label_counts: npt.ArrayLike | None,
        rng: np.random.Generator | None,
    ) -> RelabelOrNewSelection:
        if (
            label_counts is None
            or self.annotator_accuracy is None
            or self.decision_accuracy is None
        ):
            raise ValueError(
                'rule="gain" needs label_counts, annotator_accuracy and decision_accuracy'
            )
        assert req.pred_probs is not None
        a, c = float(self.annotator_accuracy), float(self.noise_cost)
        gain = relabel_gain(
            pred_probs=req.pred_probs,
            label_counts=label_counts,
            n_annotations=n_ann,
            parents=req.hierarchy,
            decision_accuracy=np.asarray(self.decision_accuracy, dtype=np.float64),
        )
        worth = gain * (1.0 + c)
        new_worth = a - (1.0 - a) * c
        lab = req.labeled[cand]
        rel = cand[lab]
        if self.mode == "both":
            rel = rel[worth[rel] > new_worth + 1e-12]
        rel_picks = top_n(worth, rel, min(req.n, rel.size), rng)
        new = cand[~lab]
        new_picks = top_n(-scores, new, min(req.n - rel_picks.size, new.size), rng)
        rest = np.setdiff1d(cand[lab], rel_picks)  # new clips ran out: the next-best relabels
        more = top_n(worth, rest, req.n - rel_picks.size - new_picks.size, rng)
        picks = np.concatenate([rel_picks, new_picks, more])
        values = np.concatenate([worth[rel_picks], np.full(new_picks.size, new_worth), worth[more]])
        return RelabelOrNewSelection(picks, req.labeled[picks], values)
