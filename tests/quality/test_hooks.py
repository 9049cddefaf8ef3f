"""The annotation write paths tell the quality layer, once their transaction commits."""

import pytest

from annotation.models import TaxonomyNode
from annotation.services.enqueue import Manual, task_enqueue
from annotation.services.review import review_decide
from annotation.services.tasks import annotation_submit, task_next_for_annotator
from quality.models import ClipConsensus
from refrain.celery import app
from tests.factories import ClipFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_celery():
    # The boundary patched here is the broker: the hook's task runs in-process instead.
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_submit_and_review_correction_update_consensus_after_commit(
    team, eager_celery, django_capture_on_commit_callbacks
) -> None:
    project = team["project"]
    clip = ClipFactory(project=project)
    task_enqueue(project=project, sources=Manual.for_clips([clip.id]))
    assignment = task_next_for_annotator(project_id=project.id, user=team["ann"])
    assert assignment is not None

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        annotation_submit(task_id=assignment.task_id, user=team["ann"], labels=["Rock/Punk"])
    assert len(callbacks) >= 1
    consensus = ClipConsensus.objects.get(clip=clip)
    assert consensus.n_annotations == 1
    assert _paths(consensus) == {"Rock", "Rock/Punk"}

    with django_capture_on_commit_callbacks(execute=True):
        review_decide(
            clip=clip, reviewer=team["reviewer"], decision="correct", labels=["Jazz/Bebop"]
        )
    # The reviewer's correction is the clip's label from now on.
    consensus.refresh_from_db()
    assert _paths(consensus) == {"Jazz", "Jazz/Bebop"}


def _paths(consensus: ClipConsensus) -> set[str]:
    return set(
        TaxonomyNode.objects.filter(id__in=consensus.node_ids).values_list("path", flat=True)
    )
