"""The one task producer: each typed source gets its kind, overlap, priority band and key."""

from __future__ import annotations

import pytest

from annotation.models import Task
from annotation.services.enqueue import (
    Acquired,
    ConsensusTie,
    Disagreement,
    LabelIssueFound,
    Manual,
    SentBack,
    task_enqueue,
)
from tests.factories import ClipFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def test_each_source_lands_in_its_band_with_its_key() -> None:
    project = ProjectFactory(overlap=2)
    c = [ClipFactory(project=project) for _ in range(7)]
    sources = [
        Manual(clip_id=c[0].pk),
        Acquired(clip_id=c[1].pk, strategy="badge", rank=0, batch=4),
        Acquired(clip_id=c[2].pk, strategy="badge", rank=3, batch=4, relabel=True, n_annotations=1),
        LabelIssueFound(
            clip_id=c[3].pk, issue_id=11, run_id=5, issue_type="wrong_sibling", score=0.1
        ),
        ConsensusTie(
            clip_id=c[4].pk, issue_id=12, issue_type="wrong_sibling", disputed_node_ids=[3]
        ),
        Disagreement(clip_id=c[5].pk, task_id=99, task_priority=0.5, n_label_sets=2),
        SentBack(clip_id=c[6].pk, reviewer="rev", note="listen again", n_decisions_before=0),
    ]
    done = task_enqueue(project=project, sources=sources)
    assert len(done.created) == 7
    task = {s.key(): Task.objects.get(pk=done.task_id(s)) for s in sources}
    expected = {
        f"label:import:{c[0].pk}": ("label", 2, 0.0, "import"),
        f"al:label:{c[1].pk}": ("label", 2, 1.0, "active_learning:badge"),
        f"al:relabel:{c[2].pk}:1": ("relabel", 1, 0.25, "active_learning:badge"),
        "issue:11": ("relabel", 1, 1.9, "label_issue:wrong_sibling"),
        "issue-review:12": ("review", 1, 2.0, "label_issue_tie:wrong_sibling"),
        "review:disagreement:99": ("review", 1, 0.5, "disagreement"),
        f"relabel:send_back:{c[6].pk}:0": ("relabel", 1, 3.0, "review:send_back"),
    }
    for key, (kind, overlap, priority, reason) in expected.items():
        t = task[key]
        assert (t.kind, t.overlap, t.reason) == (kind, overlap, reason), key
        assert t.priority == pytest.approx(priority), key
    # Blind: what a source records names ids and scores, never a label.
    assert task["issue:11"].reason_detail == {"issue": 11, "run": 5, "score": 0.1}
    # The bands, in the order the queue serves them (send-back > ties > issues > picks > imports).
    order = [task[k].priority for k in expected]
    assert order[6] > order[4] > order[3] > order[1] > order[2] > order[0]


def test_enqueue_is_idempotent_and_reports_existing_tasks() -> None:
    project = ProjectFactory()
    clip = ClipFactory(project=project)
    first = task_enqueue(project=project, sources=[SentBack(clip.pk, "rev", "", 0)])
    again = task_enqueue(
        project=project, sources=[SentBack(clip.pk, "rev", "", 0), Manual(clip_id=clip.pk)]
    )
    assert again.created == frozenset({f"label:import:{clip.pk}"})
    assert again.task_ids[f"relabel:send_back:{clip.pk}:0"] == next(iter(first.task_ids.values()))
    assert Task.objects.filter(project=project).count() == 2
    assert task_enqueue(project=project, sources=[]).task_ids == {}


def test_a_send_back_goes_ahead_of_everything_open() -> None:
    project = ProjectFactory()
    a, b = ClipFactory(project=project), ClipFactory(project=project)
    task_enqueue(project=project, sources=[Manual(clip_id=a.pk, priority=7.5)])
    done = task_enqueue(project=project, sources=[SentBack(b.pk, "rev", "", 0)])
    assert Task.objects.get(pk=next(iter(done.task_ids.values()))).priority == 8.5
