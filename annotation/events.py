"""Events the annotation layer publishes, for the layers above it to act on.

``annotation`` is the bottom of the stack (clips, taxonomies, the queue, annotations) and imports
nothing above it. When something happens there that the loop cares about, it publishes an event
here; ``active_learning`` and ``quality`` connect receivers in their ``AppConfig.ready()``. Events
are sent only once the publishing transaction commits (a rolled-back submit announces nothing),
and a receiver that raises is logged, never propagated: the write it reports is already stored.

=====================  =================================================  ===========================
event                  sent when                                          quality's receiver
=====================  =================================================  ===========================
annotation_committed   an annotation is stored: a submit, a reviewer's    consensus update, issue
                       correction, a Label Studio annotation pulled in    resolution, cycle trigger
review_decided         a reviewer accepts, corrects or sends back a clip  a tied issue is closed
taxonomy_changed       a project moves to another taxonomy version         (the Label Studio link
                                                                          updates its config)
=====================  =================================================  ===========================

Receivers are called with ``sender=None`` and the keyword arguments named in each signal's comment.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

#: kwargs: ``annotation_id``, ``clip_id``, ``project_id``, ``origin`` ("submit", "review",
#: "labelstudio").
annotation_committed = Signal()
#: kwargs: ``decision_id``, ``clip_id``, ``project_id``, ``decision`` (ReviewDecision.Decision).
review_decided = Signal()
#: kwargs: ``project_id``, ``old_version_id``, ``new_version_id``.
taxonomy_changed = Signal()


def publish(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one)."""

    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "event receiver %s failed: %s",
                    getattr(receiver, "__qualname__", receiver),
                    result,
                    exc_info=result,
                )

    transaction.on_commit(send)
