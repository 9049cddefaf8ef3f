"""Receivers of this layer's events for Label Studio (connected in ``ActiveLearningConfig.ready``)."""

from __future__ import annotations

from typing import Any

from annotation.models import LabelStudioLink


def predictions_push_on_model_done(*, model_version_id: int, project_id: int, **_: Any) -> None:
    """A model version is trained: each Label Studio link of its project gets its predictions,
    on a worker (sent after the version's row committed: ``annotation.events.publish``)."""
    from active_learning.integrations.labelstudio_ml.tasks import ls_push_model_predictions

    for link_id in LabelStudioLink.objects.filter(project_id=project_id).values_list(
        "id", flat=True
    ):
        ls_push_model_predictions.delay(link_id, model_version_id)
