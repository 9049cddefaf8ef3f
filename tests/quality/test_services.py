"""Label-quality services on PostgreSQL: detection, routing, consensus and issue closing, the
checkpointed cycle, acquisition and the schedule. Predictions are synthetic model artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django_celery_beat.models import PeriodicTask

from active_learning.models import LoopPolicy
from active_learning.services.acquisition import acquire_batch
from annotation import events
from annotation.models import Annotation, AnnotationLabel, Task
from annotation.services.annotations import annotation_create
from annotation.services.enqueue import LABEL_ISSUE_BASE
from quality.models import LabelIssue, QualityCycle, QualityRun, RunStatus
from quality.selectors import chance_probs
from quality.services.consensus import annotation_consensus_update
from quality.services.cycle import cycle_run, cycle_start_if_due
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from quality.services.schedule import cycle_schedule_set
from quality.tasks import consensus_on_annotation
from taxonomy.hierarchy import Hierarchy
from tests.factories import ClipFactory, make_taxonomy_version
from tests.quality.builders import (
    PLANTED,
    annotate,
    make_features,
    make_model,
    make_world,
    truth_probs,
)

pytestmark = pytest.mark.django_db


def _issue_for(world, position: int) -> LabelIssue:
    return LabelIssue.objects.get(clip=world.clips[position], status__in=LabelIssue.LIVE)


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
    return ann


# --- detection ------------------------------------------------------------------------------------


def test_detection_ranks_planted_sibling_swaps_first(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    run = quality_run_detect(project=world.project)
    assert run.status == RunStatus.DONE and run.n_clips == len(world.clips)
    issues = list(run.issues.order_by("rank"))
    planted = {world.clips[i].pk for i in PLANTED}
    assert {i.clip_id for i in issues[: len(planted)]} == planted
    top = issues[0]
    assert top.issue_type == LabelIssue.Type.WRONG_SIBLING and top.depth == 1
    truth = world.truth[[c.pk for c in world.clips].index(top.clip_id)]
    assert set(top.suggested_node_ids) == world.closed(truth)
    assert top.annotation == world.annotations[top.clip_id]
    assert run.n_wrong_sibling == len(planted)


def test_structural_check_needs_no_model() -> None:
    world = make_world(n_clips=4, planted={})
    clip = world.clips[0]
    # A label set stored without its parent (an old importer), and one on another version.
    unclosed = Annotation.objects.create(
        clip=clip, taxonomy_version=world.project.taxonomy_version, source="import:old"
    )
    AnnotationLabel.objects.create(annotation=unclosed, node_id=world.node_ids("Rock/Punk")[0])
    other = make_taxonomy_version()
    foreign = Annotation.objects.create(
        clip=world.clips[1], taxonomy_version=other, source="import:other"
    )
    AnnotationLabel.objects.create(annotation=foreign, node=other.nodes.get(key="Rock"))
    run = quality_run_detect(project=world.project)
    assert run.model_version is None and run.n_structural == 2 and run.n_issues == 2
    by_clip = {i.clip_id: i for i in run.issues.all()}
    assert by_clip[clip.pk].detail["missing_ancestors"] == ["Rock"]
    assert by_clip[clip.pk].annotation == unclosed
    assert by_clip[world.clips[1].pk].detail["reason"].startswith("labels from another")


def test_rerun_supersedes_open_issues_and_never_duplicates_live_ones(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    first = quality_run_detect(project=world.project)
    issues_route(run=first, budget=2)
    second = quality_run_detect(project=world.project)
    assert second.n_already_open == 2  # the routed ones stay with the first run
    assert second.n_superseded == first.n_issues - 2
    assert second.n_issues == first.n_issues - 2
    for clip in world.clips:
        assert LabelIssue.objects.filter(clip=clip, status__in=LabelIssue.LIVE).count() <= 1


# --- routing --------------------------------------------------------------------------------------


def test_routing_respects_the_budget_and_is_idempotent(tmp_path: Path) -> None:
    world = make_world(loop_policy__relabel_budget=3)
    make_model(world)
    run = quality_run_detect(project=world.project)
    out = issues_route(run=run)
    assert out["routed"] == 3
    routed = list(LabelIssue.objects.filter(run=run, status=LabelIssue.Status.ROUTED))
    assert len(routed) == 3 and {i.rank for i in routed} == {1, 2, 3}
    for issue in routed:
        task = issue.relabel_task
        assert task.kind == Task.Kind.RELABEL and task.overlap == 1
        assert task.dedupe_key == f"issue:{issue.pk}"
        assert task.reason == f"label_issue:{issue.issue_type}"
        assert task.priority == pytest.approx(LABEL_ISSUE_BASE + 1 - issue.score)
        assert "Rock" not in json.dumps(task.reason_detail)  # blind: no label names
    again = issues_route(run=run)
    assert again["routed"] == 0 and again["routed_before"] == 3
    assert Task.objects.filter(project=world.project, kind=Task.Kind.RELABEL).count() == 3
    run.refresh_from_db()
    assert run.n_routed == 3


# --- consensus and closing issues -----------------------------------------------------------------


def test_new_opinion_that_changes_the_label_confirms_the_issue(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    issues_route(run=quality_run_detect(project=world.project), budget=10)
    issue = _issue_for(world, 0)
    ann = _relabel(world, issue, world.truth[0])
    out = annotation_consensus_update(annotation=ann)
    issue.refresh_from_db()
    assert out["issue_status"] == LabelIssue.Status.CONFIRMED == issue.status
    assert set(issue.resolution_node_ids) == world.closed(world.truth[0])
    assert issue.resolving_annotation == ann and issue.closed_at is not None
    # The original annotation is untouched: labels only change through new rows.
    assert set(world.annotations[issue.clip_id].labels.values_list("node_id", flat=True)) == (
        world.closed(PLANTED[0])
    )
    # A redelivered message changes nothing.
    assert annotation_consensus_update(annotation=ann)["issue_status"] == "confirmed"


def test_new_opinion_that_agrees_with_the_original_rejects_the_issue(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=len(world.clips))
    issue = _issue_for(world, 1)  # a correct label, routed because the budget took everything
    ann = _relabel(world, issue, world.truth[1])
    assert annotation_consensus_update(annotation=ann)["issue_status"] == "rejected"
    issue.refresh_from_db()
    assert set(issue.resolution_node_ids) == world.closed(world.truth[1])


def test_an_even_split_goes_to_a_reviewer_who_adjudicates(tmp_path: Path) -> None:
    world = make_world()
    probs = truth_probs(world)
    hier = Hierarchy(world.index.parents_array)
    probs[2] = chance_probs(hier, 1)[0]  # the model has no opinion on clip 2
    make_model(world, probs)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=len(world.clips))
    issue = _issue_for(world, 2)
    sibling = "Rock/Punk" if world.truth[2] != "Rock/Punk" else "Rock/Metal"
    ann = _relabel(world, issue, sibling)
    out = annotation_consensus_update(annotation=ann)
    issue.refresh_from_db()
    assert out["issue_status"] == LabelIssue.Status.IN_REVIEW
    review = issue.review_task
    assert review.kind == Task.Kind.REVIEW and review.dedupe_key == f"issue-review:{issue.pk}"
    assert issue.review_requested_at is not None and issue.closed_at is None
    # The reviewer corrects to the second opinion: a new review annotation, the issue confirmed.
    correction, _ = annotation_create(
        clip=issue.clip,
        index=world.index,
        explicit_node_ids=world.node_ids(sibling),
        source="review:reviewer",
        kind=Annotation.Kind.REVIEW,
        user=world.users["reviewer"],
    )
    annotation_consensus_update(annotation=correction)
    issue.refresh_from_db()
    assert issue.status == LabelIssue.Status.CONFIRMED
    assert issue.adjudicated_by == world.users["reviewer"]


def test_event_reaches_quality_only_after_commit(django_capture_on_commit_callbacks, monkeypatch):
    world = make_world(n_clips=1, planted={})
    sent: list[int] = []
    monkeypatch.setattr(consensus_on_annotation, "delay", sent.append)
    ann = world.annotations[world.clips[0].pk]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        events.publish(
            events.annotation_committed,
            annotation_id=ann.pk,
            clip_id=ann.clip_id,
            project_id=world.project.pk,
            origin="submit",
        )
    assert len(callbacks) == 1 and sent == []
    callbacks[0]()
    assert sent == [ann.pk]


def test_cycle_starts_after_retrain_every_new_annotations(django_capture_on_commit_callbacks):
    world = make_world(n_clips=3, planted={}, loop_policy__retrain_every=4)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert cycle_start_if_due(project=world.project) is None  # 3 < 4
        annotate(world, world.clips[0], "Rock/Punk", user=world.users["ann2"])
        cycle = cycle_start_if_due(project=world.project)
        assert cycle is not None and cycle.trigger == QualityCycle.Trigger.ANNOTATIONS
        assert cycle_start_if_due(project=world.project) is None  # one live cycle
    assert len(callbacks) == 1


# --- acquisition ----------------------------------------------------------------------------------


def _add_unlabelled(world, n: int) -> None:
    for _ in range(n):
        world.clips.append(ClipFactory(project=world.project))
        world.truth.append("Rock/Punk")


def test_cold_start_acquires_diverse_new_clips(tmp_path: Path) -> None:
    world = make_world(n_clips=6, planted={}, loop_policy__acquisition_batch_size=4)
    _add_unlabelled(world, 10)
    make_features(world)
    result = acquire_batch(project=world.project, model_version=None)
    assert result.cold_start and result.strategy == "diversity"
    tasks = Task.objects.filter(project=world.project, reason="active_learning:diversity")
    assert tasks.count() == 4 and {t.kind for t in tasks} == {Task.Kind.LABEL}
    labelled = {c.pk for c in world.clips[:6]}
    assert not labelled & set(tasks.values_list("clip_id", flat=True))
    again = acquire_batch(project=world.project, model_version=None)
    assert again.created_label == 0 and tasks.count() == 4


def test_relabel_or_new_mixes_task_kinds_within_the_relabel_share(tmp_path: Path) -> None:
    world = make_world(
        loop_policy__acquisition_batch_size=6,
        loop_policy__acquisition_relabel_share=0.5,
        loop_policy__acquisition_strategy=LoopPolicy.AcquisitionStrategy.RELABEL_OR_NEW,
    )
    _add_unlabelled(world, 12)
    probs = truth_probs(world)
    probs[len(world.clips) - 12 :] = chance_probs(Hierarchy(world.index.parents_array), 12)
    mv = make_model(world, probs)
    make_features(world)
    result = acquire_batch(project=world.project, model_version=mv)
    tasks = Task.objects.filter(project=world.project, reason="active_learning:relabel_or_new")
    kinds = list(tasks.values_list("kind", flat=True))
    assert len(kinds) == 6 and 1 <= kinds.count(Task.Kind.RELABEL) <= 3
    assert kinds.count(Task.Kind.LABEL) >= 3
    for task in tasks:
        assert "score" in task.reason_detail and 0 < task.priority <= 1
    assert result.created_label + result.created_relabel == 6
    # The next batch picks other clips: none gets a second open task.
    acquire_batch(project=world.project, model_version=mv)
    per_clip = list(
        Task.objects.filter(project=world.project, status=Task.Status.OPEN).values_list(
            "clip_id", flat=True
        )
    )
    assert len(per_clip) == len(set(per_clip)) > 6


def test_acquisition_raises_priority_of_an_imported_label_task(tmp_path: Path) -> None:
    world = make_world(n_clips=4, planted={}, loop_policy__acquisition_batch_size=2)
    _add_unlabelled(world, 2)
    make_features(world)
    waiting = [
        Task.objects.create(project=world.project, clip=c, dedupe_key=f"imp:{c.pk}")
        for c in world.clips[4:]
    ]
    result = acquire_batch(project=world.project, model_version=None)
    assert result.bumped == 2 and result.created_label == 0
    assert all(Task.objects.get(pk=t.pk).priority > 0 for t in waiting)


# --- the cycle (in process; the worker tests run it on a real worker) ------------------------------


def test_cycle_resumes_after_a_crash_without_duplicates(tmp_path: Path) -> None:
    world = make_world(loop_policy__relabel_budget=3, loop_policy__acquisition_batch_size=4)
    _add_unlabelled(world, 6)
    make_model(world)
    make_features(world)
    steps = ("detect", "route", "acquire")
    # A worker that died after routing: its cycle is still marked running.
    cycle = cycle_run(project=world.project, steps=("detect", "route"))
    QualityCycle.objects.filter(pk=cycle.pk).update(status=RunStatus.RUNNING, finished_at=None)
    n_tasks = Task.objects.filter(project=world.project).count()
    resumed = cycle_run(project=world.project, steps=steps)
    assert resumed.pk == cycle.pk and resumed.status == RunStatus.DONE
    assert resumed.attempts == 2 and resumed.steps_done == list(steps)
    assert QualityRun.objects.filter(project=world.project).count() == 1
    assert Task.objects.filter(project=world.project).count() == n_tasks + 4
    # Another full cycle: a new run, no duplicated live issue, no second task for a routed issue.
    cycle_run(project=world.project, steps=steps)
    keys = list(Task.objects.filter(project=world.project).values_list("dedupe_key", flat=True))
    assert len(keys) == len(set(keys))
    for clip in world.clips:
        assert LabelIssue.objects.filter(clip=clip, status__in=LabelIssue.LIVE).count() <= 1
        assert (
            Task.objects.filter(clip=clip, kind=Task.Kind.RELABEL, status=Task.Status.OPEN).count()
            <= 1
        )


def test_schedule_is_a_periodic_task_admins_can_edit() -> None:
    world = make_world(n_clips=1, planted={})
    task = cycle_schedule_set(project=world.project, crontab_or_interval="0 3 * * *")
    assert task.task == "quality.tasks.run_quality_cycle"
    assert json.loads(task.args) == [world.project.pk] and task.crontab.hour == "3"
    task = cycle_schedule_set(project=world.project, crontab_or_interval=3600)
    assert task.interval.every == 3600 and task.crontab is None
    assert PeriodicTask.objects.filter(task="quality.tasks.run_quality_cycle").count() == 1
    with pytest.raises(ValueError):
        cycle_schedule_set(project=world.project, crontab_or_interval="0 3 *")
    cycle_schedule_set(project=world.project, crontab_or_interval=None)
    assert not PeriodicTask.objects.filter(task="quality.tasks.run_quality_cycle").exists()


def test_probabilities_stay_consistent_after_float32_round_trip(tmp_path: Path) -> None:
    world = make_world(n_clips=7, planted={})
    probs = truth_probs(world) + np.float32(1e-7)  # a child may now exceed its parent by an ulp
    make_model(world, probs)
    assert quality_run_detect(project=world.project).status == RunStatus.DONE


def test_training_labels_follow_the_consensus_where_people_disagreed(tmp_path: Path) -> None:
    from active_learning.selectors import training_labels

    world = make_world()
    make_model(world)
    clip_ids = [c.pk for c in world.clips]
    before = training_labels(world.project, world.index, clip_ids)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=len(world.clips))
    # Clip 1 is labelled right; its second opinion is wrong and the consensus rejects it.
    issue = _issue_for(world, 1)
    wrong = "Rock/Punk" if world.truth[1] != "Rock/Punk" else "Rock/Metal"
    ann = _relabel(world, issue, wrong)
    assert annotation_consensus_update(annotation=ann)["issue_status"] == "rejected"
    # Clip 0 carries a planted swap; its second opinion is right and the consensus takes it.
    fixed = _relabel(world, _issue_for(world, 0), world.truth[0])
    assert annotation_consensus_update(annotation=fixed)["issue_status"] == "confirmed"

    labels = training_labels(world.project, world.index, clip_ids)
    col = {n.key: n.index for n in world.index.nodes}
    # The newest annotation of clip 1 is the rejected opinion; the label that stands is not.
    assert labels.Y[1, col[wrong]] == 0 and labels.Y[1, col[world.truth[1]]] == 1
    assert labels.Y[0, col[world.truth[0]]] == 1 and labels.Y[0, col[PLANTED[0]]] == 0
    assert labels.primary is not None and labels.primary[1] == col[world.truth[1]]
    assert (
        fixed.pk in labels.snapshot["annotations"] and ann.pk not in labels.snapshot["annotations"]
    )
    # Lone labels stay as the annotator gave them, even where the model disagrees (clip 5).
    assert labels.Y[5, col[PLANTED[5]]] == 1
    np.testing.assert_array_equal(np.delete(labels.Y, [0, 1], 0), np.delete(before.Y, [0, 1], 0))


def test_a_rejected_second_opinion_is_not_judged_again_as_the_label(tmp_path: Path) -> None:
    world = make_world()
    make_model(world)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=len(world.clips))
    original = world.annotations[world.clips[1].pk]
    wrong = "Rock/Punk" if world.truth[1] != "Rock/Punk" else "Rock/Metal"
    ann = _relabel(world, _issue_for(world, 1), wrong)
    assert annotation_consensus_update(annotation=ann)["issue_status"] == "rejected"

    again = quality_run_detect(project=world.project, budget=len(world.clips))
    issue = LabelIssue.objects.get(run=again, clip=world.clips[1])
    # The next run judges the label the consensus kept, which the model agrees with.
    assert issue.annotation_id == original.pk
    assert issue.rank > len(PLANTED)
