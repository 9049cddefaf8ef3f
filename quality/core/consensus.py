"""CROWDLAB-style consensus for hierarchical multi-label annotations.

CROWDLAB (cleanlab's ``get_label_quality_multiannotator``) combines a classifier's out-of-sample
probabilities with the votes of several annotators, each weighted by an estimate of its accuracy,
into a posterior per example; the consensus is the posterior's most likely label and its quality the
posterior's confidence in it. Here the "classes" are the **parent -> child decisions** of the taxonomy
(see :mod:`quality.core.label_issues`): at every node whose parent is in the label set, each annotator
said on or off, and the model gives ``P(child | parent)``. Weights follow CROWDLAB, computed over those
binary decisions; the consensus label set is built top-down so it is ancestor-closed.

Glossary
--------
N clips, K taxonomy nodes, M annotators, A annotations (one label set by one annotator on one clip).

Input format
------------
Annotations come in **long form** (:class:`Annotations`): three aligned arrays ``clip`` (A,),
``annotator`` (A,) and ``labels`` (A, K), each row one annotator's ancestor-closed label set for one
clip. This scales with the number of annotations rather than N x M x K. Build it from a list of
``(clip_idx, annotator_idx, label_row)`` tuples with :meth:`Annotations.from_records`, or from cleanlab's
wide layout, an (N, M, K) array with NaN where annotator m did not label clip n, with
:meth:`Annotations.from_dense`.

Weights (per decision, as CROWDLAB per class)
--------------------------------------------
Over the consensus-active decisions of clips with two or more annotations:

- ``mlc_error``: error of always answering each node's majority decision (CROWDLAB's "most likely
  class" baseline), at least 1e-6;
- annotator m's weight ``max(1 - (1 - agreement_m) / mlc_error, 1e-6)`` where ``agreement_m`` is its
  decision agreement with the *other* annotators of the same clips (by default the disagreement is
  first turned into m's own error rate, see ``model_weight_from``);
- the model's weight ``max(1 - model_error / mlc_error, 1e-6) * sqrt(mean annotations per clip)``,
  where ``model_error`` is, by default, estimated on *all* labelled clips (the model's disagreement
  with the annotations, corrected for the annotators' estimated error), not only on the
  multi-annotated ones: see ``model_weight_from`` in :func:`get_consensus`;
- an annotator's vote counts as ``consensus_likelihood`` (the mean agreement of annotators with the
  consensus) for its decision and ``1 - consensus_likelihood`` against it.

When no clip has two annotations (one annotator per clip everywhere), annotator agreement is measured
against the model's decisions instead, over all clips, so single-annotated projects still get weights;
annotators who share no clip with another get the mean agreement of the others (as cleanlab does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from quality.core.label_issues import label_quality_scores
from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import close_downward, decisions_made

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CLIPPING_LOWER_BOUND = 1e-6

__all__ = ["Annotations", "ConsensusResult", "get_consensus", "majority_vote"]


@dataclass(frozen=True)
class Annotations:
    """Annotations in long form: row a is annotator ``annotator[a]``'s label set for ``clip[a]``.

    Attributes
    ----------
    clip : (A,) int64
        Clip index in ``[0, n_clips)``.
    annotator : (A,) int64
        Annotator index in ``[0, n_annotators)``.
    labels : (A, K) int8
        Ancestor-closed 0/1 label sets.
    n_clips, n_annotators : int
        N and M (clips or annotators with no annotation are allowed).
    """

    clip: IntArray
    annotator: IntArray
    labels: npt.NDArray[np.int8]
    n_clips: int
    n_annotators: int

    def __post_init__(self) -> None:
        c = np.asarray(self.clip, dtype=np.int64).reshape(-1)
        m = np.asarray(self.annotator, dtype=np.int64).reshape(-1)
        y = np.asarray(self.labels)
        if y.ndim != 2 or y.shape[0] != c.shape[0] or m.shape != c.shape:
            raise ValueError(
                f"clip {c.shape}, annotator {m.shape} and labels {y.shape} must align as (A,), (A,), (A, K)"
            )
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("annotation labels must be 0/1")
        if c.size and (c.min() < 0 or c.max() >= self.n_clips):
            raise ValueError(f"clip indices must lie in [0, {self.n_clips})")
        if m.size and (m.min() < 0 or m.max() >= self.n_annotators):
            raise ValueError(f"annotator indices must lie in [0, {self.n_annotators})")
        pairs = c * max(self.n_annotators, 1) + m
        if np.unique(pairs).size != pairs.size:
            raise ValueError("an annotator labelled the same clip twice; keep one (the latest)")
        object.__setattr__(self, "clip", c)
        object.__setattr__(self, "annotator", m)
        object.__setattr__(self, "labels", y.astype(np.int8))

    @property
    def n_nodes(self) -> int:
        return int(self.labels.shape[1])

    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple[int, int, npt.ArrayLike]],
        *,
        n_clips: int | None = None,
        n_annotators: int | None = None,
        n_nodes: int | None = None,
    ) -> Annotations:
        """From ``(clip_idx, annotator_idx, label_row)`` tuples; ``label_row`` is a (K,) 0/1 row.

        ``n_clips`` / ``n_annotators`` default to one more than the largest index seen; ``n_nodes``
        is needed only when ``records`` is empty.
        """
        rows = list(records)
        if not rows:
            if n_nodes is None:
                raise ValueError("n_nodes is required when there are no records")
            return cls(
                np.empty(0, np.int64),
                np.empty(0, np.int64),
                np.empty((0, n_nodes), np.int8),
                n_clips or 0,
                n_annotators or 0,
            )
        clip = np.asarray([r[0] for r in rows], dtype=np.int64)
        ann = np.asarray([r[1] for r in rows], dtype=np.int64)
        lab = np.stack([np.asarray(r[2]).reshape(-1) for r in rows])
        return cls(
            clip,
            ann,
            lab.astype(np.int8),
            int(clip.max()) + 1 if n_clips is None else n_clips,
            int(ann.max()) + 1 if n_annotators is None else n_annotators,
        )

    @classmethod
    def from_dense(cls, labels_multiannotator: npt.ArrayLike) -> Annotations:
        """From an (N, M, K) array with NaN (the whole row) where annotator m did not label clip n."""
        x = np.asarray(labels_multiannotator, dtype=np.float64)
        if x.ndim != 3:
            raise ValueError(f"labels_multiannotator must be (N, M, K), got shape {x.shape}")
        missing = np.isnan(x)
        partial = missing.any(axis=2) & ~missing.all(axis=2)
        if partial.any():
            raise ValueError("a (clip, annotator) row is partly NaN; NaN must mark the whole row")
        c, m = np.nonzero(~missing.any(axis=2))
        return cls(
            c.astype(np.int64), m.astype(np.int64), x[c, m].astype(np.int8), x.shape[0], x.shape[1]
        )

    def to_dense(self) -> FloatArray:
        """(N, M, K) float with NaN where annotator m did not label clip n."""
        out = np.full((self.n_clips, self.n_annotators, self.n_nodes), np.nan)
        out[self.clip, self.annotator] = self.labels
        return out


@dataclass(frozen=True)
class ConsensusResult:
    """Consensus per clip and quality per annotator.

    Attributes
    ----------
    consensus_labels : (N, K) int8
        Ancestor-closed consensus label sets (all zeros for clips nobody labelled).
    consensus_quality : (N,) float
        Label quality score of the consensus under the posterior (lower = less trustworthy).
    annotator_agreement : (N,) float
        Fraction of the clip's annotators whose label set equals the consensus (NaN if none).
    num_annotations : (N,) int64
    post_pred_probs : (N, K) float
        Posterior marginals combining the model and the weighted votes (hierarchy-consistent).
    annotator_quality : (M,) float
        CROWDLAB annotator quality: a mix of the mean label quality of its label sets under the
        posterior and its decision agreement with the consensus (NaN for annotators with no labels).
    annotator_weight : (M,) float
    model_weight : float
    """

    consensus_labels: npt.NDArray[np.int8]
    consensus_quality: FloatArray
    annotator_agreement: FloatArray
    num_annotations: IntArray
    post_pred_probs: FloatArray
    annotator_quality: FloatArray
    annotator_weight: FloatArray
    model_weight: float


def _vote_counts(
    ann: Annotations, h: Hierarchy, weights: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    """Per clip and node: (weighted) votes for "on" and (weighted) active votes, each (N, K)."""
    y = ann.labels > 0
    act = decisions_made(y, h)
    w = np.ones(ann.clip.shape[0]) if weights is None else weights[ann.annotator]
    on = np.zeros((ann.n_clips, h.n_nodes))
    tot = np.zeros((ann.n_clips, h.n_nodes))
    np.add.at(on, ann.clip, (y & act) * w[:, None])
    np.add.at(tot, ann.clip, act * w[:, None])
    return on, tot


def majority_vote(
    annotations: Annotations, pred_probs: npt.ArrayLike, *, parents: npt.ArrayLike | Hierarchy
) -> npt.NDArray[np.int8]:
    """(N, K) top-down majority vote per decision; ties and unvoted decisions go to the model
    (``P(child | parent) >= 0.5``)."""
    h = as_hierarchy(parents)
    cond = h.conditional(np.asarray(pred_probs, dtype=np.float64))
    on, tot = _vote_counts(annotations, h, None)
    off = tot - on
    decide = np.where(on == off, cond >= 0.5, on > off)
    labelled = np.bincount(annotations.clip, minlength=annotations.n_clips) > 0
    return (close_downward(decide, h) & labelled[:, None]).astype(np.int8)


def _pairwise_to_error(disagreement: float) -> float:
    """Per-decision error rate ``e`` of two independent sources of equal quality whose decisions
    disagree at rate ``disagreement = 2 e (1 - e)``."""
    return 0.5 * (1.0 - float(np.sqrt(max(1.0 - 2.0 * min(disagreement, 0.5), 0.0))))


def _weights(
    ann: Annotations,
    cons: BoolArray,
    cond: FloatArray,
    n_ann: IntArray,
    h: Hierarchy,
    model_weight_from: str = "all",
) -> tuple[FloatArray, float, float, FloatArray]:
    """(annotator weights (M,), model weight, consensus likelihood, agreement with consensus (M,))."""
    y = ann.labels > 0
    act = decisions_made(y, h)
    cact = decisions_made(cons, h)
    multi = n_ann >= 2
    overlap = bool(multi.any())
    clip_mask = multi if overlap else n_ann >= 1
    row_mask = clip_mask[ann.clip]
    # Clips over which the model is judged: only the multi-annotated ones (CROWDLAB), or every
    # labelled clip (default; see get_consensus for why).
    model_clips = clip_mask if model_weight_from == "overlap" else n_ann >= 1

    # Baseline: always answer each node's majority decision (consensus-active decisions).
    ca = cact & model_clips[:, None]
    n_on = (cons & ca).sum(axis=0)
    n_tot = ca.sum(axis=0)
    mlc_error = max(
        float(np.minimum(n_on, n_tot - n_on).sum()) / max(float(n_tot.sum()), 1.0),
        CLIPPING_LOWER_BOUND,
    )

    model_dec = cond >= 0.5

    # Agreement of each annotation's decisions with the consensus, where both made the decision.
    both = act & cact[ann.clip]
    agree_cons = (y == cons[ann.clip]) & both
    m = ann.n_annotators
    num_c = np.bincount(
        ann.annotator[row_mask], weights=agree_cons[row_mask].sum(axis=1), minlength=m
    )
    den_c = np.bincount(ann.annotator[row_mask], weights=both[row_mask].sum(axis=1), minlength=m)
    agreement_cons = np.where(den_c > 0, num_c / np.maximum(den_c, 1.0), np.nan)
    consensus_likelihood = float(num_c.sum() / max(den_c.sum(), 1.0))

    if overlap:
        # Agreement with the *other* annotators of the same clip, decision by decision.
        on, tot = _vote_counts(ann, h, None)
        on_o = on[ann.clip] - (y & act)
        tot_o = tot[ann.clip] - act
        agree_cnt = np.where(y, on_o, tot_o - on_o) * act
        cnt = tot_o * act
    else:
        agree_cnt = ((y == model_dec[ann.clip]) & act).astype(np.float64)
        cnt = act.astype(np.float64)
    num = np.bincount(ann.annotator[row_mask], weights=agree_cnt[row_mask].sum(axis=1), minlength=m)
    den = np.bincount(ann.annotator[row_mask], weights=cnt[row_mask].sum(axis=1), minlength=m)
    agreement = np.where(den > 0, num / np.maximum(den, 1.0), np.nan)
    if not overlap:
        agreement_cons = agreement.copy()  # the consensus is each annotator's own label here
    if np.isnan(agreement).all():
        agreement[:] = 1.0 - mlc_error / 2  # nothing to compare with: a neutral weight
    agreement = np.where(np.isnan(agreement), np.nanmean(agreement), agreement)
    ann_weight = np.clip(1.0 - (1.0 - agreement) / mlc_error, CLIPPING_LOWER_BOUND, None)

    if model_weight_from == "overlap":
        # CROWDLAB: the model's disagreement with the consensus of multi-annotated clips.
        model_error = float(((model_dec != cons) & ca).sum()) / max(float(ca.sum()), 1.0)
    else:
        # The model's disagreement with every annotation's decisions, on all labelled clips, minus
        # the part the annotators' own errors explain: with independent errors e_model and e_ann,
        # disagreement = e_model + e_ann - 2 e_model e_ann. e_ann comes from how often annotators
        # disagree with each other where they overlap (0 without overlap: then all of the
        # disagreement is charged to the model, which under-weights it rather than over-weights).
        dis = float(((y != model_dec[ann.clip]) & act).sum()) / max(float(act.sum()), 1.0)
        if overlap:
            pair_dis = 1.0 - float(num.sum()) / max(float(den.sum()), 1.0)
            e_ann = min(_pairwise_to_error(pair_dis), 0.45)
            # Put the annotators on the same scale as the model: their own error, not their
            # disagreement with others (which counts both sides' errors, ~2e). With a weight from
            # disagreement against a model weight from error, a routed round (where the first
            # labels are mostly wrong, so disagreement is high) lets the model overrule lone
            # annotators wholesale.
            e_each = np.clip((1.0 - agreement - e_ann) / (1.0 - 2.0 * e_ann), 0.0, None)
            ann_weight = np.clip(1.0 - e_each / mlc_error, CLIPPING_LOWER_BOUND, None)
        else:
            e_ann = 0.0
        model_error = max((dis - e_ann) / (1.0 - 2.0 * e_ann), 0.0)
    model_weight = max(1.0 - model_error / mlc_error, CLIPPING_LOWER_BOUND) * float(
        np.sqrt(np.mean(n_ann[n_ann > 0])) if (n_ann > 0).any() else 1.0
    )
    return ann_weight.astype(np.float64), model_weight, consensus_likelihood, agreement_cons


def _posterior(
    ann: Annotations,
    cond: FloatArray,
    ann_weight: FloatArray,
    model_weight: float,
    likelihood: float,
    h: Hierarchy,
) -> tuple[FloatArray, FloatArray]:
    """(posterior conditionals, posterior marginals), each (N, K)."""
    on_w, tot_w = _vote_counts(ann, h, ann_weight)
    votes = on_w * likelihood + (tot_w - on_w) * (1.0 - likelihood)
    post_cond = (model_weight * cond + votes) / (model_weight + tot_w)
    marg = h.marginal(post_cond)
    return post_cond, marg


def get_consensus(
    annotations: Annotations | Sequence[tuple[int, int, npt.ArrayLike]],
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    n_rounds: int = 2,
    model_weight_from: Literal["all", "overlap"] = "all",
) -> ConsensusResult:
    """Consensus label sets, their quality, and annotator quality (CROWDLAB over tree decisions).

    Parameters
    ----------
    annotations : Annotations or sequence of (clip_idx, annotator_idx, (K,) label row)
        Long-form annotations; N is taken from ``pred_probs``.
    pred_probs : (N, K) float
        Out-of-sample model probabilities, hierarchy-consistent.
    parents : (K,) int or Hierarchy
    n_rounds : int, default 2
        Rounds of (weights from the current consensus -> posterior -> new consensus), starting from
        the majority vote. CROWDLAB does one such refinement after its majority vote.
    model_weight_from : {"all", "overlap"}, default "all"
        Where the model's weight is estimated. ``"overlap"`` is CROWDLAB's rule: the model's error
        against the consensus of clips with two or more annotations. When overlap comes only from
        routing suspects for a second opinion, those clips are exactly the ones where the model
        disagreed with the first label, so that estimate collapses the model's weight to ~0 and
        nobody arbitrates the disagreements. ``"all"`` (default) measures the model's decision
        disagreement with every annotation on every labelled clip (no selection bias) and removes
        the share that the annotators' own error rate explains (estimated from their pairwise
        disagreement where clips overlap; taken as 0 without overlap, which can only lower the
        model's weight); annotators are then weighted by their own estimated error on the same
        scale (their disagreement with the others, less the others' share), not by the raw
        disagreement, which counts both sides' errors. Without that, a routed round, where the
        first labels are mostly wrong and disagreement is high, under-weights every annotator
        and lets the model overrule single-annotated clips wholesale (measured on the corpus:
        clip error 0.25 -> 0.27-0.36 on 2 of 5 seeds). Both estimates are biased by targeted
        overlap (annotator error a little high, so the model's error a little low); random
        overlap removes that bias.

    Returns
    -------
    ConsensusResult

    Raises
    ------
    ValueError
        On shapes that disagree or labels that are not 0/1 and ancestor-closed.
    """
    h = as_hierarchy(parents)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != h.n_nodes:
        raise ValueError(f"pred_probs must be (N, {h.n_nodes}), got shape {p.shape}")
    if isinstance(annotations, Annotations):
        ann = annotations
    else:
        ann = Annotations.from_records(annotations, n_clips=p.shape[0], n_nodes=h.n_nodes)
    if ann.n_clips != p.shape[0] or ann.n_nodes != h.n_nodes:
        raise ValueError(
            f"annotations cover {ann.n_clips} clips x {ann.n_nodes} nodes but pred_probs is {p.shape}"
        )
    if h.not_ancestor_closed(ann.labels).any():
        raise ValueError("some annotation label sets are not ancestor-closed")
    cond = h.conditional(p)
    n_ann = np.bincount(ann.clip, minlength=ann.n_clips).astype(np.int64)
    labelled = n_ann > 0
    cons = majority_vote(ann, p, parents=h) > 0
    ann_weight: FloatArray = np.ones(ann.n_annotators)
    model_weight = 1.0
    likelihood = 0.5
    agreement_cons: FloatArray = np.full(ann.n_annotators, np.nan)
    post_cond: FloatArray = cond
    marg: FloatArray = p
    for _ in range(max(n_rounds, 1)):
        ann_weight, model_weight, likelihood, agreement_cons = _weights(
            ann, cons, cond, n_ann, h, model_weight_from
        )
        post_cond, marg = _posterior(ann, cond, ann_weight, model_weight, likelihood, h)
        cons = close_downward(post_cond >= 0.5, h) & labelled[:, None]

    # CROWDLAB's quality: self-confidence under the posterior. Not the detector's default
    # ("calibrated"): the consensus comes from this posterior, so there is nothing to calibrate it by.
    quality = label_quality_scores(
        cons, np.clip(marg, 0.0, 1.0), parents=h, method="self_confidence"
    )
    same = np.all((ann.labels > 0) == cons[ann.clip], axis=1)
    agree_clip = np.bincount(ann.clip, weights=same, minlength=ann.n_clips)
    annotator_agreement = np.where(labelled, agree_clip / np.maximum(n_ann, 1), np.nan)

    # Annotator quality as CROWDLAB: w * mean label quality under the posterior + (1 - w) * agreement.
    lqs = label_quality_scores(
        ann.labels, np.clip(marg[ann.clip], 0.0, 1.0), parents=h, method="self_confidence"
    )
    counts = np.bincount(ann.annotator, minlength=ann.n_annotators)
    mean_lqs = np.where(
        counts > 0,
        np.bincount(ann.annotator, weights=lqs, minlength=ann.n_annotators) / np.maximum(counts, 1),
        np.nan,
    )
    frac = float(np.mean(n_ann[labelled])) / max(ann.n_annotators, 1) if labelled.any() else 0.0
    w = model_weight / (model_weight + float(ann_weight.sum()) * frac)
    annotator_quality = np.where(
        np.isnan(agreement_cons), mean_lqs, w * mean_lqs + (1.0 - w) * agreement_cons
    )
    return ConsensusResult(
        consensus_labels=cons.astype(np.int8),
        consensus_quality=np.where(labelled, quality, np.nan),
        annotator_agreement=annotator_agreement,
        num_annotations=n_ann,
        post_pred_probs=marg,
        annotator_quality=annotator_quality,
        annotator_weight=ann_weight,
        model_weight=float(model_weight),
    )
