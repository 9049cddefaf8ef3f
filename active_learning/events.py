"""Events active_learning publishes, for its own integrations and the layers above it.

Sent with :func:`annotation.events.publish`: once the publishing transaction commits, receivers
called robustly (a receiver that raises is logged; the write it reports is already stored).

=====================  =================================================  ===========================
event                  sent when                                          receivers
=====================  =================================================  ===========================
model_version_done     a model version finished training (status done)    Label Studio: push its
                                                                          predictions to each link
=====================  =================================================  ===========================
"""

from __future__ import annotations

from django.dispatch import Signal

#: kwargs: ``model_version_id``, ``project_id``.
model_version_done = Signal()
