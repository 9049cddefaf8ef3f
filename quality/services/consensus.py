"""Consensus across annotators, and what a new annotation does to the label issues of its clip.

``consensus_recompute_project`` runs the CROWDLAB-style core over the whole project: annotator
weights and qualities are estimated from every shared clip, so it is the authoritative pass (the
cycle runs it after detection). ``consensus_recompute`` refreshes one clip when it gets a new
annotation, from that clip's own annotations and the model; between cycles that is the cheap, local
view, marked ``scope="clip"``.

When a new opinion answers a routed issue (:func:`do_issue_resolve`), the issue closes as
*confirmed* when the consensus no longer equals the label set that was judged, *rejected* when it
does, and goes to a reviewer when the evidence is an even split (e.g. 1-1 with no model preference).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from active_learning.models import ModelVersion
from annotation.models import Annotation, AnnotationLabel, Clip, Project, ReviewDecision
from annotation.selectors import TaxonomyIndex, current_labels, taxonomy_index_cached
from annotation.services.annotations import consensus_annotations_set
from annotation.services.enqueue import ConsensusTie, task_enqueue
from quality.core.consensus import ConsensusResult, get_consensus
from quality.models import AnnotatorQuality, ClipConsensus, LabelIssue
from quality.selectors import (
    LongAnnotations,
    chance_probs,
    latest_done_model,
    long_annotations,
    model_probs,
)
from taxonomy.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

#: A disputed decision whose posterior P(child | parent) is this close to 0.5 is a tie.
TIE_MARGIN = 0.05


@dataclass(frozen=True)
class ClipConsensusOutcome:
    """One clip's fresh consensus, plus what the resolution of its issues needs."""

    consensus: ClipConsensus
    tie: bool
    disputed_node_ids: list[int]


def _probs_for(
    *, project: Project, clip_ids: list[int], hier: Hierarchy, model_version: ModelVersion | None
) -> np.ndarray:
    """(N, K) probabilities for ``clip_ids``: the model's where it has the clip, chance elsewhere."""
    probs = chance_probs(hier, len(clip_ids))
    if model_version is not None and clip_ids:
        mp = model_probs(model_version=model_version, hierarchy=hier)
        rows, present = mp.rows_for(clip_ids)
        probs[present] = mp.pred_probs[rows[present]]
    return probs


def _consensus(
    *, project: Project, index: TaxonomyIndex, clip_ids: list[int] | None, mv: ModelVersion | None
) -> tuple[LongAnnotations, ConsensusResult, Hierarchy] | None:
    hier = Hierarchy(index.parents_array)
    la = long_annotations(project=project, index=index, clip_ids=clip_ids)
    if la.annotations.clip.size == 0:
        return None
    probs = _probs_for(project=project, clip_ids=la.clip_ids, hier=hier, model_version=mv)
    return la, get_consensus(la.annotations, probs, parents=hier), hier


def _rows(
    *,
    project: Project,
    index: TaxonomyIndex,
    la: LongAnnotations,
    res: ConsensusResult,
    mv: ModelVersion | None,
    scope: str,
) -> list[ClipConsensus]:
    now = timezone.now()
    nodes = index.nodes
    adjudicated = _reviewer_corrections(project=project, clip_ids=list(la.clip_ids), index=index)
    out = []
    for i, cid in enumerate(la.clip_ids):
        n = int(res.num_annotations[i])
        if n == 0:
            continue
        q = float(res.consensus_quality[i])
        a = float(res.annotator_agreement[i])
        out.append(
            ClipConsensus(
                clip_id=cid,
                project=project,
                node_ids=adjudicated.get(cid)
                or [nodes[j].id for j in np.flatnonzero(res.consensus_labels[i])],
                quality=None if np.isnan(q) else q,
                agreement=None if np.isnan(a) else a,
                n_annotations=n,
                model_version=mv,
                model_weight=res.model_weight,
                scope=scope,
                computed_at=now,
            )
        )
    return out


def _reviewer_corrections(
    *, project: Project, clip_ids: list[int], index: TaxonomyIndex
) -> dict[int, list[int]]:
    """Clips whose label that stands is a reviewer's correction: its node ids (2 queries).

    A reviewer adjudicates, so the correction is the consensus until someone labels the clip again;
    votes are still counted for quality and agreement.
    """
    current = current_labels(project=project, clip_ids=clip_ids, ready_only=False)
    return {
        c: sorted(ids, key=lambda i: index.by_id[i].index)
        for c, ids, kind, foreign in zip(
            current.clip_ids, current.node_ids, current.kinds, current.foreign, strict=True
        )
        if kind == Annotation.Kind.REVIEW and not foreign
    }


def _agreeing_annotations(rows: list[ClipConsensus]) -> dict[int, int | None]:
    """For each clip of ``rows``: the newest annotation whose label set equals the consensus where
    several people labelled it, else None (the clip's newest annotation stands)."""
    consensus = {r.clip_id: set(r.node_ids) for r in rows if r.n_annotations >= 2 and r.node_ids}
    out: dict[int, int | None] = {r.clip_id: None for r in rows}
    if not consensus:
        return out
    sets: dict[int, set[int]] = defaultdict(set)
    for ann_id, node_id in AnnotationLabel.objects.filter(
        annotation__clip_id__in=list(consensus)
    ).values_list("annotation_id", "node_id"):
        sets[ann_id].add(node_id)
    for clip_id, ann_id in (
        Annotation.objects.filter(clip_id__in=list(consensus))
        .order_by("clip_id", "-created_at", "-id")
        .values_list("clip_id", "id")
    ):
        if out[clip_id] is None and sets.get(ann_id) == consensus[clip_id]:
            out[clip_id] = ann_id
    return out


def _upsert(rows: list[ClipConsensus]) -> None:
    """Store fresh consensus rows, and point each clip at the annotation that agrees with them
    (what :func:`annotation.selectors.current_labels` reads as the label that stands)."""
    consensus_annotations_set(pins=_agreeing_annotations(rows))
    ClipConsensus.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["clip"],
        update_fields=[
            "node_ids",
            "quality",
            "agreement",
            "n_annotations",
            "model_version",
            "model_weight",
            "scope",
            "computed_at",
        ],
    )


def consensus_recompute_project(
    *, project: Project, model_version: ModelVersion | None = None
) -> dict[str, float | int | None]:
    """Consensus of every labelled clip and quality of every annotator (the authoritative pass)."""
    index = taxonomy_index_cached(project.taxonomy_version)
    mv = model_version or latest_done_model(project=project)
    found = _consensus(project=project, index=index, clip_ids=None, mv=mv)
    if found is None:
        return {"clips": 0, "annotators": 0, "model_weight": None}
    la, res, _ = found
    rows = _rows(project=project, index=index, la=la, res=res, mv=mv, scope="project")
    counts = np.bincount(la.annotations.annotator, minlength=len(la.annotators))
    now = timezone.now()
    quality_rows = [
        AnnotatorQuality(
            project=project,
            user_id=who,
            quality=None if np.isnan(res.annotator_quality[m]) else float(res.annotator_quality[m]),
            weight=float(res.annotator_weight[m]),
            n_annotations=int(counts[m]),
            model_version=mv,
            computed_at=now,
        )
        for m, who in enumerate(la.annotators)
        if isinstance(who, int)
    ]
    with transaction.atomic():
        _upsert(rows)
        AnnotatorQuality.objects.bulk_create(
            quality_rows,
            update_conflicts=True,
            unique_fields=["project", "user"],
            update_fields=["quality", "weight", "n_annotations", "model_version", "computed_at"],
        )
    return {"clips": len(rows), "annotators": len(la.annotators), "model_weight": res.model_weight}


def consensus_recompute(
    *, clip: Clip, model_version: ModelVersion | None = None
) -> ClipConsensusOutcome | None:
    """Refresh one clip's consensus from its own annotations and the model (None: no labels)."""
    project = clip.project
    index = taxonomy_index_cached(project.taxonomy_version)
    mv = model_version or latest_done_model(project=project)
    found = _consensus(project=project, index=index, clip_ids=[clip.pk], mv=mv)
    if found is None:
        return None
    la, res, hier = found
    rows = _rows(project=project, index=index, la=la, res=res, mv=mv, scope="clip")
    _upsert(rows)
    # A tie: a decision the annotators disagree on, made where the consensus reaches it, whose
    # posterior sits at chance: neither the votes nor the model prefer a side.
    y = la.annotations.labels > 0
    disputed = y.any(axis=0) & ~y.all(axis=0)
    cons = res.consensus_labels[0] > 0
    reached = np.ones_like(cons)
    has_parent = hier.parents >= 0
    reached[has_parent] = cons[hier.parents[has_parent]]
    post_cond = hier.conditional(np.clip(res.post_pred_probs, 0.0, 1.0))[0]
    at_chance = np.abs(post_cond - 0.5) < TIE_MARGIN
    tie_nodes = np.flatnonzero(disputed & reached & at_chance)
    return ClipConsensusOutcome(
        consensus=ClipConsensus.objects.get(clip=clip),
        tie=bool(tie_nodes.size),
        disputed_node_ids=[index.nodes[j].id for j in np.flatnonzero(disputed)],
    )


# --- issues answered by new opinions ---------------------------------------------------------------


def _label_set(annotation_id: int | None) -> set[int]:
    if annotation_id is None:
        return set()
    return set(
        AnnotationLabel.objects.filter(annotation_id=annotation_id).values_list(
            "node_id", flat=True
        )
    )


def check_issue_for_annotation(*, annotation: Annotation) -> LabelIssue | None:
    """The live issue a new annotation answers: the routed issue whose relabel task it completes,
    or the clip's issue waiting on a reviewer (any new opinion or a reviewer's correction); for an
    annotation that already answered one, that issue."""
    answered = LabelIssue.objects.filter(resolving_annotation=annotation).first()
    if answered is not None:
        return answered  # a redelivered message: report what it did the first time
    live = LabelIssue.objects.filter(clip_id=annotation.clip_id)
    if annotation.kind == Annotation.Kind.REVIEW:
        return live.filter(status=LabelIssue.Status.IN_REVIEW).first()
    if annotation.task_id is not None:
        routed = live.filter(
            status=LabelIssue.Status.ROUTED, relabel_task_id=annotation.task_id
        ).first()
        if routed is not None:
            return routed
    return live.filter(status=LabelIssue.Status.IN_REVIEW).first()


def do_issue_resolve(
    *, issue: LabelIssue, annotation: Annotation, outcome: ClipConsensusOutcome | None
) -> LabelIssue:
    """Close (or send to review) an issue that ``annotation`` answers. Idempotent.

    Lock: the issue row (``SELECT ... FOR UPDATE``), so a redelivered message or a concurrent
    reviewer sees the first decision and changes nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        issue = LabelIssue.objects.select_for_update().get(pk=issue.pk)
        if issue.status not in (LabelIssue.Status.ROUTED, LabelIssue.Status.IN_REVIEW):
            return issue
        original = _label_set(issue.annotation_id)
        if annotation.kind == Annotation.Kind.REVIEW:
            # A reviewer's correction adjudicates: it is the label from now on.
            final = _label_set(annotation.pk)
            issue.adjudicated_by_id = annotation.user_id
        elif outcome is None:
            return issue
        elif outcome.tie and issue.status == LabelIssue.Status.ROUTED:
            source = ConsensusTie(
                clip_id=issue.clip_id,
                issue_id=issue.pk,
                issue_type=issue.issue_type,
                disputed_node_ids=outcome.disputed_node_ids,
            )
            issue.review_task_id = task_enqueue(project=issue.project, sources=[source]).task_id(
                source
            )
            issue.status = LabelIssue.Status.IN_REVIEW
            issue.review_requested_at = now
            issue.resolving_annotation = annotation
            issue.save(
                update_fields=[
                    "review_task",
                    "status",
                    "review_requested_at",
                    "resolving_annotation",
                ]
            )
            return issue
        elif outcome.tie:
            return issue  # still even: the reviewer decides
        else:
            final = set(outcome.consensus.node_ids)
        issue.status = (
            LabelIssue.Status.CONFIRMED if final != original else LabelIssue.Status.REJECTED
        )
        issue.resolution_node_ids = sorted(final)
        issue.resolving_annotation = annotation
        issue.closed_at = now
        issue.save(
            update_fields=[
                "status",
                "resolution_node_ids",
                "resolving_annotation",
                "adjudicated_by",
                "closed_at",
            ]
        )
    return issue


def issue_adjudicate_by_review(*, decision: ReviewDecision) -> LabelIssue | None:
    """A reviewer's *accept* closes the clip's tied issue: accepting the judged annotation rejects
    the issue, accepting another confirms it. (A *correct* decision arrives as a review annotation
    through :func:`annotation_consensus_update`.)"""
    if decision.decision != ReviewDecision.Decision.ACCEPT or decision.annotation_id is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        issue = (
            LabelIssue.objects.select_for_update()
            .filter(clip_id=decision.clip_id, status=LabelIssue.Status.IN_REVIEW)
            .first()
        )
        if issue is None:
            return None
        final = _label_set(decision.annotation_id)
        original = _label_set(issue.annotation_id)
        issue.status = (
            LabelIssue.Status.CONFIRMED if final != original else LabelIssue.Status.REJECTED
        )
        issue.resolution_node_ids = sorted(final)
        issue.adjudicated_by_id = decision.reviewer_id
        issue.closed_at = now
        issue.save(update_fields=["status", "resolution_node_ids", "adjudicated_by", "closed_at"])
    return issue


def annotation_consensus_update(*, annotation: Annotation) -> dict[str, object]:
    """A new annotation's clip consensus and the issue it answers. Safe to run twice. (The cycle's
    "after N new annotations" trigger follows in :func:`quality.services.cycle.annotation_settle`.)"""
    outcome = consensus_recompute(clip=annotation.clip)
    issue = check_issue_for_annotation(annotation=annotation)
    if issue is not None:
        issue = do_issue_resolve(issue=issue, annotation=annotation, outcome=outcome)
    return {
        "annotation": annotation.pk,
        "consensus": outcome.consensus.node_ids if outcome else None,
        "issue": issue.pk if issue else None,
        "issue_status": issue.status if issue else None,
    }
