"""The clip explorer's per-clip summary rows (:class:`quality.models.ClipSummary`), kept in step.

One function writes them, :func:`clip_summaries_refresh`: it recomputes the rows of the clips it is
given (or of the whole project) from the tables that hold the facts, so a refresh is always correct
whatever happened before, and running it twice changes nothing. The label column is the label that
stands as :func:`annotation.selectors.current_labels` decides it (the one answer), the prediction
the newest finished model's most probable path.

Who calls it, and for which clips (each after its own writes are stored):

=================================================  =============================================
what changed                                       refresh
=================================================  =============================================
a new annotation settled (consensus, issue)        that clip (``cycle.annotation_settle``)
a reviewer's accept closed a tie                   that clip (``tasks.adjudicate_on_review``)
a detection step (issues, model, consensus pass)   the whole project (``cycle._step_detect``)
a run's issues routed                              the routed clips (``routing.issues_route``)
a model version finished                           the whole project, on a worker (receiver)
clips imported (no row yet)                        the missing rows, when the explorer opens
=================================================  =============================================
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Annotation, Clip, Project
from annotation.selectors import current_labels, taxonomy_index_cached
from quality.export import most_specific_paths
from quality.models import ClipConsensus, ClipSummary, LabelIssue
from quality.selectors import latest_done_model, model_probs_rows
from taxonomy.hierarchy import Hierarchy
from taxonomy.paths import most_probable_path

logger = logging.getLogger(__name__)

#: Clips per batch of a refresh (bounds memory and the size of each IN list).
CHUNK = 10_000
_UPDATE_FIELDS = [
    f.name
    for f in ClipSummary._meta.concrete_fields
    if f.name not in ("clip", "project") and not f.primary_key
]


def id_list(ids: Iterable[int]) -> str:
    """``" 3 17 42 "``: the delimited form the explorer matches with ``LIKE '% <id> %'``."""
    return " " + " ".join(str(i) for i in sorted(set(ids))) + " " if ids else " "


def _newest_issues(project: Project, clip_ids: list[int]) -> dict[int, tuple[int, str, str]]:
    qs = LabelIssue.objects.filter(project=project, clip_id__in=clip_ids).order_by(
        "clip_id", "-created_at", "-id"
    )
    if connection.vendor == "postgresql":
        qs = qs.distinct("clip_id")
    out: dict[int, tuple[int, str, str]] = {}
    for clip_id, pk, kind, status in qs.values_list("clip_id", "pk", "issue_type", "status"):
        out.setdefault(clip_id, (pk, kind, status))
    return out


def _predictions(
    project: Project, clip_ids: list[int]
) -> tuple[int | None, dict[int, tuple[str, float]]]:
    """The newest finished model's number and, per clip it scored, (deepest node's path of its most
    probable path, that node's probability)."""
    mv = latest_done_model(project=project)
    if mv is None or not clip_ids:
        return None, {}
    index = taxonomy_index_cached(project.taxonomy_version)
    hier = Hierarchy(index.parents_array)
    try:
        probs, present = model_probs_rows(model_version=mv, hierarchy=hier, clip_ids=clip_ids)
    except (OSError, ValueError) as exc:  # artifacts gone or unreadable: no prediction column
        logger.warning("model %s: cannot read predictions for the summary: %s", mv.pk, exc)
        return mv.number, {}
    if not present.any():
        return mv.number, {}
    path = most_probable_path(probs[present], hier)  # (n, K) one root-to-leaf path per row
    depth = np.where(path, hier.depth[None, :], -1)
    deepest = np.argmax(depth, axis=1)
    prob = probs[present][np.arange(len(deepest)), deepest]
    ids = np.asarray(clip_ids, dtype=np.int64)[present]
    nodes = index.nodes
    return mv.number, {
        int(c): (nodes[int(k)].path, round(float(p), 6))
        for c, k, p in zip(ids, deepest, prob, strict=True)
    }


def _rows(project: Project, clips: list[dict[str, Any]]) -> list[ClipSummary]:
    clip_ids = [c["pk"] for c in clips]
    index = taxonomy_index_cached(project.taxonomy_version)
    current = current_labels(project=project, clip_ids=clip_ids)
    label_of = {
        c: (a, nodes)
        for c, a, nodes in zip(
            current.clip_ids, current.annotation_ids, current.node_ids, strict=True
        )
    }
    n_annotations: dict[int, int] = defaultdict(int)
    users_of: dict[int, set[int]] = defaultdict(set)
    for clip_id, user_id, n in (
        Annotation.objects.filter(clip_id__in=clip_ids)
        .values("clip_id", "user_id")
        .annotate(n=Count("id"))
        .values_list("clip_id", "user_id", "n")
    ):
        n_annotations[clip_id] += n
        if user_id is not None:
            users_of[clip_id].add(user_id)
    usernames = dict(
        get_user_model()
        .objects.filter(pk__in={u for us in users_of.values() for u in us})
        .values_list("pk", "username")
    )
    consensus = {
        c: (q, a)
        for c, q, a in ClipConsensus.objects.filter(clip_id__in=clip_ids).values_list(
            "clip_id", "quality", "agreement"
        )
    }
    issues = _newest_issues(project, clip_ids)
    model_number, predictions = _predictions(project, clip_ids)
    now = timezone.now()
    out = []
    for c in clips:
        pk = c["pk"]
        ann_id, node_ids = label_of.get(pk, (None, []))
        known = [n for n in node_ids if n in index.by_id]
        users = sorted(users_of.get(pk, ()), key=lambda u: usernames.get(u, ""))
        quality, agreement = consensus.get(pk, (None, None))
        issue_id, issue_type, issue_status = issues.get(pk, (None, "", ""))
        prediction, prob = predictions.get(pk, ("", None))
        name = c["original_name"] or c["external_id"] or f"clip {pk}"
        meta = json.dumps(c["metadata"] or {}, ensure_ascii=False, sort_keys=True)
        out.append(
            ClipSummary(
                clip_id=pk,
                project_id=project.pk,
                name=name[:255],
                duration_s=c["duration_s"],
                clip_status=c["status"],
                search=f"{c['original_name']} {c['external_id']} {meta}".lower()[:4000],
                label_annotation_id=ann_id,
                label="|".join(most_specific_paths(known, index))[:2000],
                label_node_ids=id_list(index.closure(known)),
                n_annotations=n_annotations.get(pk, 0),
                n_annotators=len(users),
                annotators=", ".join(usernames.get(u, "?") for u in users)[:1000],
                annotator_ids=id_list(users),
                quality=quality,
                agreement=agreement,
                issue_id=issue_id,
                issue_type=issue_type,
                issue_status=issue_status,
                model_number=model_number if pk in predictions else None,
                prediction=prediction[:2000],
                prediction_prob=prob,
                updated_at=now,
            )
        )
    return out


def clip_summaries_refresh(*, project: Project, clip_ids: Iterable[int] | None = None) -> int:
    """Recompute the summary rows of ``clip_ids`` (of the project's clips; None = all of them).

    Idempotent; returns how many rows were written. About eight queries per 10,000 clips, plus the
    newest model's probabilities read from its memory-mapped matrix.
    """
    qs = Clip.objects.filter(project=project).order_by("pk")
    if clip_ids is not None:
        wanted = sorted({int(c) for c in clip_ids})
        if not wanted:
            return 0
    else:
        wanted = list(qs.values_list("pk", flat=True))
    written = 0
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start : start + CHUNK]
        clips = list(
            qs.filter(pk__in=part).values(
                "pk", "original_name", "external_id", "duration_s", "status", "metadata"
            )
        )
        rows = _rows(project, clips)
        ClipSummary.objects.bulk_create(
            rows,
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["clip"],
            update_fields=_UPDATE_FIELDS,
        )
        written += len(rows)
    return written


def clip_summaries_behind(*, project: Project) -> bool:
    """Whether a clip newer than the newest summary row exists (an import since the last refresh).

    One query of two index probes, cheap enough for every page view; clip ids only grow, so a row
    missing below the newest one can only come from a failed refresh, which the next full refresh
    (every detection step) repairs.
    """
    newest = ClipSummary.objects.filter(project=project).order_by("-clip").values("clip")[:1]
    return Clip.objects.filter(project=project, pk__gt=Coalesce(Subquery(newest), 0)).exists()


def clip_summaries_missing(*, project: Project) -> int:
    """How many of the project's clips have no summary row (an anti-join: when behind only)."""
    return Clip.objects.filter(project=project, summary__isnull=True).count()


def clip_summaries_fill_missing(*, project: Project) -> int:
    """Write the rows of clips that have none (imported since the last refresh)."""
    missing = Clip.objects.filter(project=project, summary__isnull=True).values_list(
        "pk", flat=True
    )
    return clip_summaries_refresh(project=project, clip_ids=list(missing))
