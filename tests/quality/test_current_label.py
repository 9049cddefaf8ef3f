"""Every reader sees the same label for a clip: training, detection, the export (service and API),
the clip page and consensus, on a project with disagreements, reviews and relabels.

The one rule lives in :func:`annotation.selectors.current_labels`; this test pins that no reader
decides for itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.test import Client

from active_learning.selectors import training_labels
from annotation.models import Annotation, Clip
from annotation.selectors import current_labels
from annotation.services.annotations import annotation_create
from annotation.services.review import review_decide
from quality.export import label_export_rows
from quality.models import ClipConsensus, ClipSummary, LabelIssue
from quality.selectors import clip_quality_view
from quality.services.consensus import annotation_consensus_update
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from quality.services.summary import clip_summaries_refresh
from tests.quality.builders import PLANTED, annotate, make_model, make_world

pytestmark = pytest.mark.django_db


def _relabel(world, issue: LabelIssue, path: str, user: str = "ann2") -> Annotation:
    ann, _ = annotation_create(
        clip=issue.clip,
        index=world.index,
        explicit_node_ids=world.node_ids(path),
        source=f"user:{user}",
        kind=Annotation.Kind.RELABEL,
        user=world.users[user],
        task=issue.relabel_task,
    )
    annotation_consensus_update(annotation=ann)
    return ann


def _most_specific(world, node_ids) -> list[str]:
    nodes = [world.index.by_id[n] for n in node_ids]
    parents = {world.index.parents_array[n.index] for n in nodes}
    return sorted(n.path for n in nodes if n.index not in parents)


def test_every_reader_agrees_on_the_label_that_stands(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=len(world.clips))
    other = {t: ("Rock/Punk" if t != "Rock/Punk" else "Rock/Metal") for t in set(world.truth)}
    # Clip 0: a planted swap; the relabel is right and the consensus takes it (confirmed).
    fixed = _relabel(world, LabelIssue.objects.get(clip=world.clips[0]), world.truth[0])
    # Clip 1: labelled right; the relabel is wrong and the consensus rejects it: newest != label.
    rejected = _relabel(world, LabelIssue.objects.get(clip=world.clips[1]), other[world.truth[1]])
    # Clip 2: a reviewer's correction stands, whatever the votes.
    correction_path = other[world.truth[2]]
    review_decide(
        clip=world.clips[2],
        reviewer=world.users["reviewer"],
        decision="correct",
        labels=[correction_path],
    )
    correction = Annotation.objects.filter(clip=world.clips[2], kind="review").get()
    annotation_consensus_update(annotation=correction)
    # Clip 3: two more annotators disagree with each other (three opinions in all).
    for user, path in [("ann2", other[world.truth[3]]), ("ann3", world.truth[3])]:
        ann = annotate(world, world.clips[3], path, user=world.users[user])
        annotation_consensus_update(annotation=ann)

    current = current_labels(project=world.project)
    stands = {
        c: (a, sorted(n))
        for c, a, n in zip(current.clip_ids, current.annotation_ids, current.node_ids, strict=True)
    }
    assert set(stands) == {c.pk for c in world.clips}
    assert stands[world.clips[0].pk][0] == fixed.pk
    assert stands[world.clips[1].pk][0] == world.annotations[world.clips[1].pk].pk != rejected.pk
    assert stands[world.clips[2].pk][0] == correction.pk
    # Where several people labelled a clip and one of them agrees with the consensus, that stands.
    for clip_id, node_ids in ClipConsensus.objects.filter(
        project=world.project, n_annotations__gte=2
    ).values_list("clip_id", "node_ids"):
        assert stands[clip_id][1] == sorted(node_ids)

    # Training.
    ids = [c.pk for c in world.clips]
    labels = training_labels(world.project, world.index, ids)
    for row, clip_id in enumerate(ids):
        cols = np.flatnonzero(labels.Y[row])
        assert sorted(world.index.nodes[j].id for j in cols) == stands[clip_id][1]
    assert sorted(labels.snapshot["annotations"]) == sorted(a for a, _ in stands.values())

    # The export, as a service and through the API.
    rows = {r["refrain_id"]: r for r in label_export_rows(project=world.project)}
    client = Client()
    client.force_login(world.users["admin"])
    response = client.get(
        f"/api/v1/projects/{world.project.pk}/export", {"format": "jsonl", "labelled_only": "true"}
    )
    assert response.status_code == 200
    api_rows = {
        r["refrain_id"]: r
        for r in map(json.loads, b"".join(response.streaming_content).decode().splitlines())
    }
    for clip_id, (_, node_ids) in stands.items():
        expected = _most_specific(world, node_ids)
        assert sorted(rows[clip_id]["labels"]) == expected
        assert sorted(api_rows[clip_id]["labels"]) == expected

    # The clip page.
    for clip in world.clips[:4]:
        view = clip_quality_view(clip=Clip.objects.get(pk=clip.pk))
        assert sorted(n.id for n in view["given"]) == stands[clip.pk][1]

    # The clip explorer's summary rows (written by the same refresh the services run).
    clip_summaries_refresh(project=world.project)
    for clip_id, ann_id, label in ClipSummary.objects.filter(project=world.project).values_list(
        "clip_id", "label_annotation_id", "label"
    ):
        assert ann_id == stands[clip_id][0]
        assert sorted(label.split("|")) == _most_specific(world, stands[clip_id][1])

    # Detection judges the label that stands: a new run's issues name those annotations.
    run2 = quality_run_detect(project=world.project, budget=len(world.clips))
    for clip_id, ann_id in LabelIssue.objects.filter(run=run2).values_list(
        "clip_id", "annotation_id"
    ):
        assert ann_id == stands[clip_id][0]
    assert PLANTED  # the world carries planted swaps, so the run above has issues to check
    assert LabelIssue.objects.filter(run=run2).exists()
