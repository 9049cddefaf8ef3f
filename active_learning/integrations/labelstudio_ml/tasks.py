"""Celery entry points of the Label Studio ML integration (listed in ``refrain.celery``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from active_learning.integrations.labelstudio_ml.services import (
    MLPredictionsUnavailable,
    ml_predictions_push,
)
from active_learning.models import ModelVersion
from annotation.integrations.labelstudio.services import LabelStudioSyncError
from annotation.models import LabelStudioLink

logger = logging.getLogger(__name__)


# acks_late: the push is idempotent (tasks holding this model version's prediction are skipped).
@shared_task(
    name="active_learning.integrations.labelstudio_ml.tasks.ls_push_model_predictions",
    acks_late=True,
)
def ls_push_model_predictions(link_id: int, model_version_id: int | None = None) -> dict[str, Any]:
    link = LabelStudioLink.objects.select_related("project__taxonomy_version").get(id=link_id)
    mv = ModelVersion.objects.get(id=model_version_id) if model_version_id is not None else None
    try:
        summary = ml_predictions_push(link=link, model_version=mv)
    except (LabelStudioSyncError, MLPredictionsUnavailable) as exc:
        # Not retried in a loop: `manage.py labelstudio push-predictions` pushes by hand.
        logger.warning("Label Studio link %s: predictions not pushed: %s", link_id, exc)
        return {"error": str(exc)}
    if summary is None:
        return {"skipped": "no trained model"}
    return {
        "model_version": summary.model_version,
        "created": summary.created,
        "already": summary.already,
        "not_pushed": len(summary.not_pushed),
    }
