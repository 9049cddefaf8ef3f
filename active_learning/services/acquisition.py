"""Batch acquisition: the project's policy picks which clips the next annotations are spent on.

Policy (the project's ``LoopPolicy``, admin-editable): ``acquisition_strategy``,
``acquisition_batch_size`` and ``acquisition_relabel_share`` (the largest share of a batch that may
be second opinions). The
strategy runs over the project's ready clips with cached embeddings (``feature_matrix``) and, once a
model exists, its probabilities (``prediction_matrix``); before the first model it is the cold
start: diversity over embeddings (random when there are no embeddings either).

Picks become tasks, keyed so a re-run (a resumed cycle) never doubles them:

* a new clip with no open label task: a label task ``al:label:<clip>``;
* a new clip already waiting in the queue (imported with a label task): that task's priority is
  raised to the pick's priority; the batch record lists it;
* a labelled clip picked for a second opinion: a blind relabel task ``al:relabel:<clip>:<n>``, n the
  clip's annotation count, skipped while the clip has an open relabel task.

Priorities lie in (0, 1]: after routed label issues (> 1), before imports (0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Greatest

from active_learning.core.acquisition import RelabelOrNew, get_strategy
from active_learning.models import ModelVersion
from active_learning.selectors import feature_matrix, prediction_matrix
from annotation.models import Annotation, Clip, Project, Task
from annotation.selectors import taxonomy_index_cached
from annotation.services.enqueue import Acquired, task_enqueue
from taxonomy.hierarchy import Hierarchy

#: How many candidates RelabelOrNew ranks per slot, so capping relabels still fills the batch.
OVERSAMPLE = 3


@dataclass
class AcquisitionResult:
    strategy: str
    requested: int
    cold_start: bool
    picked: list[dict[str, Any]] = field(default_factory=list)
    created_label: int = 0
    created_relabel: int = 0
    bumped: int = 0
    skipped: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "requested": self.requested,
            "cold_start": self.cold_start,
            "created_label": self.created_label,
            "created_relabel": self.created_relabel,
            "bumped": self.bumped,
            "skipped": self.skipped,
            "picked": self.picked,
            "note": self.note,
        }


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@dataclass(frozen=True)
class RelabelEvidence:
    """What the relabel-or-new strategy weighs a second opinion with, from the layer that decides
    consensus (``quality.selectors.relabel_evidence``): each labelled clip's consensus quality and
    CROWDLAB's model and mean annotator weights from the last project-wide pass."""

    clip_quality: dict[int, float | None] = field(default_factory=dict)
    model_weight: float = 1.0
    annotator_weight: float = 1.0


def acquire_batch(
    *,
    project: Project,
    model_version: ModelVersion | None,
    batch_size: int | None = None,
    seed: int = 0,
    context: dict[str, Any] | None = None,
    evidence: RelabelEvidence | None = None,
) -> AcquisitionResult:
    """Pick a batch under the project's policy and queue it; returns what was picked and done.

    ``evidence`` feeds the relabel-or-new strategy; without it every labelled clip counts as at
    chance and both weights as 1.
    """
    evidence = evidence or RelabelEvidence()
    policy = project.loop_policy
    n_batch = policy.acquisition_batch_size if batch_size is None else batch_size
    index = taxonomy_index_cached(project.taxonomy_version)
    hier = Hierarchy(index.parents_array)
    clip_ids = np.array(
        sorted(
            Clip.objects.filter(project=project, status=Clip.Status.READY).values_list(
                "pk", flat=True
            )
        ),
        dtype=np.int64,
    )
    feats = feature_matrix(project=project)
    embeddings: np.ndarray
    if feats is not None:
        f_ids, x = feats
        pos = {int(c): i for i, c in enumerate(f_ids)}
        clip_ids = np.array([c for c in clip_ids if int(c) in pos], dtype=np.int64)
        embeddings = _standardise(np.asarray(x)[[pos[int(c)] for c in clip_ids]])
    else:
        embeddings = np.zeros((clip_ids.size, 1))
    probs: np.ndarray | None = None
    if model_version is not None:
        m_ids, p, _ = prediction_matrix(model_version=model_version)
        mpos = {int(c): i for i, c in enumerate(m_ids)}
        keep = np.array([int(c) in mpos for c in clip_ids], dtype=bool)
        clip_ids, embeddings = clip_ids[keep], embeddings[keep]
        probs = hier.make_consistent(
            np.clip(np.asarray(p, dtype=np.float64)[[mpos[int(c)] for c in clip_ids]], 0.0, 1.0)
        )
    counts = dict(
        Annotation.objects.filter(clip_id__in=clip_ids.tolist())
        .exclude(kind=Annotation.Kind.REVIEW)
        .values_list("clip_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    n_ann = np.array([counts.get(int(c), 0) for c in clip_ids], dtype=np.int64)
    # A labelled clip already waiting for an opinion (a routed issue, an earlier pick) is no
    # candidate: a second relabel task would spend two opinions on one doubt.
    busy = set(
        Task.objects.filter(
            project=project,
            status=Task.Status.OPEN,
            kind__in=[Task.Kind.LABEL, Task.Kind.RELABEL],
            clip_id__in=clip_ids[n_ann > 0].tolist(),
        ).values_list("clip_id", flat=True)
    )
    keep = np.array([int(c) not in busy for c in clip_ids], dtype=bool)
    clip_ids, embeddings, n_ann = clip_ids[keep], embeddings[keep], n_ann[keep]
    if probs is not None:
        probs = probs[keep]
    labelled = n_ann > 0

    name = str(policy.acquisition_strategy)
    cold = probs is None
    if cold:
        name = "diversity" if feats is not None else "random"
    result = AcquisitionResult(strategy=name, requested=n_batch, cold_start=cold)
    n_new = int((~labelled).sum())
    rng = np.random.default_rng(seed)
    picks: list[tuple[int, bool, float | None]] = []  # (row, relabel, score)
    if name == "relabel_or_new" and probs is not None:
        quality = evidence.clip_quality
        q = np.array([quality.get(int(c)) for c in clip_ids], dtype=np.float64)
        # A labelled clip with no consensus yet (labelled since the last pass) counts as chance.
        q = np.where(labelled & np.isnan(q), 0.5, q)
        strategy = RelabelOrNew(
            model_weight=evidence.model_weight, annotator_weight=evidence.annotator_weight
        )
        n_cand = int((~labelled | (n_ann < strategy.max_annotations)).sum())
        want = min(n_cand, n_batch * OVERSAMPLE)
        if want > 0 and n_batch > 0:
            sel = strategy.select_detailed(
                pred_probs=probs,
                embeddings=embeddings,
                labeled=labelled,
                n=want,
                parents=hier,
                consensus_quality=q,
                n_annotations=n_ann,
                rng=rng,
            )
            cap = int(np.floor(policy.acquisition_relabel_share * n_batch))
            n_rel = 0
            for row, rel, score in zip(sel.indices, sel.relabel, sel.scores, strict=True):
                if len(picks) >= n_batch:
                    break
                if rel and n_rel >= cap:
                    continue
                n_rel += int(rel)
                picks.append((int(row), bool(rel), float(score)))
    else:
        n = min(n_batch, n_new)
        if n > 0:
            strategy_obj = get_strategy(name)
            rows = strategy_obj.select(
                pred_probs=probs,
                embeddings=embeddings,
                labeled=labelled,
                n=n,
                parents=hier,
                rng=rng,
            )
            picks = [(int(r), False, None) for r in rows]
    if not picks:
        result.note = "nothing to acquire: no candidate clips"
        return result
    _queue(
        project=project, clip_ids=clip_ids, n_ann=n_ann, picks=picks, result=result, context=context
    )
    return result


def _queue(
    *,
    project: Project,
    clip_ids: np.ndarray,
    n_ann: np.ndarray,
    picks: list[tuple[int, bool, float | None]],
    result: AcquisitionResult,
    context: dict[str, Any] | None,
) -> None:
    n = len(picks)
    picked_clips = [int(clip_ids[r]) for r, _, _ in picks]
    with transaction.atomic():
        open_tasks = Task.objects.filter(
            clip_id__in=picked_clips,
            status=Task.Status.OPEN,
            kind__in=[Task.Kind.LABEL, Task.Kind.RELABEL],
        ).values_list("clip_id", "kind", "pk")
        open_label = {c: pk for c, k, pk in open_tasks if k == Task.Kind.LABEL}
        open_relabel = {c for c, k, _ in open_tasks if k == Task.Kind.RELABEL}
        sources: list[Acquired] = []
        for rank, (row, relabel, score) in enumerate(picks):
            cid = int(clip_ids[row])
            source = Acquired(
                clip_id=cid,
                strategy=result.strategy,
                rank=rank,
                batch=n,
                relabel=relabel,
                n_annotations=int(n_ann[row]) if relabel else 0,
                detail={"score": score, **(context or {})},
            )
            entry: dict[str, Any] = {
                "clip": cid,
                "relabel": relabel,
                "score": score,
                "rank": rank + 1,
            }
            if relabel and (cid in open_relabel or cid in open_label):
                entry["action"] = "skipped: clip already in the queue"
                result.skipped += 1
            elif not relabel and cid in open_label:
                # Raise, never lower: a re-run of the same batch leaves the priority as it is.
                Task.objects.filter(pk=open_label[cid]).update(
                    priority=Greatest("priority", source.priority)
                )
                entry["action"] = f"bumped task {open_label[cid]}"
                result.bumped += 1
            else:
                sources.append(source)
                entry["action"] = source.key()
            result.picked.append(entry)
        created = task_enqueue(project=project, sources=sources).created
        result.created_label = sum(not s.relabel and s.key() in created for s in sources)
        result.created_relabel = sum(s.relabel and s.key() in created for s in sources)
        result.skipped += len(sources) - len(created)


def acquisition_pool_counts(*, project: Project) -> dict[str, int]:
    """Ready clips, labelled clips and open labelling tasks (for pages and summaries)."""
    ready = Clip.objects.filter(project=project, status=Clip.Status.READY)
    return {
        "ready": ready.count(),
        "labelled": ready.filter(~Q(annotations=None)).distinct().count(),
        "open_tasks": Task.objects.filter(project=project, status=Task.Status.OPEN).count(),
    }
