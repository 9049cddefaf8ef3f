"""What the quality layer does when the annotation layer publishes an event.

Connected in :meth:`quality.apps.QualityConfig.ready`; each receiver runs after the publishing
transaction commits (see :mod:`annotation.events`) and only enqueues work for a worker, so a submit
never waits on consensus. A broker outage is logged by the publisher and never fails a write that is
already stored: the sweep's consensus catch-up (``quality.services.sweep``) redoes what was lost.
"""

from __future__ import annotations

from annotation.models import ReviewDecision
from quality.tasks import adjudicate_on_review, consensus_on_annotation


def on_annotation_committed(*, annotation_id: int, **_: object) -> None:
    """A new opinion (submit, correction, Label Studio): update the clip's consensus, close the
    issue it answers, count it towards the next relabel cycle."""
    consensus_on_annotation.delay(annotation_id)


def on_review_decided(*, decision_id: int, decision: str, **_: object) -> None:
    """An *accept* may close a tied issue."""
    if decision == ReviewDecision.Decision.ACCEPT:
        adjudicate_on_review.delay(decision_id)
