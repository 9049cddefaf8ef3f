"""What the quality layer does when the annotation layer publishes an event.

Connected in :meth:`quality.apps.QualityConfig.ready`; each receiver runs after the publishing
transaction commits (see :mod:`annotation.events`) and only enqueues work for a worker, so a submit
never waits on consensus. A broker outage is logged by the publisher and never fails a write that is
already stored: the sweep's consensus catch-up (``quality.services.sweep``) redoes what was lost.
"""

from __future__ import annotations

from active_learning.models import JobStatus, ModelVersion
from annotation.models import ReviewDecision
from quality.tasks import adjudicate_on_review, consensus_on_annotation, refresh_clip_summaries
from refrain.jobs import delay_on_commit_or_log


def on_annotation_committed(*, annotation_id: int, **_: object) -> None:
    """A new opinion (submit, correction, Label Studio): update the clip's consensus, close the
    issue it answers, count it towards the next relabel cycle."""
    consensus_on_annotation.delay(annotation_id)


def on_review_decided(*, decision_id: int, decision: str, **_: object) -> None:
    """An *accept* may close a tied issue."""
    if decision == ReviewDecision.Decision.ACCEPT:
        adjudicate_on_review.delay(decision_id)


def on_model_version_saved(*, instance: ModelVersion, created: bool, **_: object) -> None:
    """A training that finished (outside a cycle too): the explorer's prediction column follows.
    A row created already done (an import of a model, a test) is left to the next refresh."""
    if not created and instance.status == JobStatus.DONE:
        # Logged, not raised, with the broker down: the training is stored; the next refresh
        # (the cycle's detect step, a page) catches the summaries up.
        delay_on_commit_or_log(refresh_clip_summaries, instance.project_id)
