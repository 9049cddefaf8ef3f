"""Celery entry points for Label Studio: ids and JSON in, a service call, a JSON summary out.

The worker must import this module: ``refrain.celery`` autodiscovers only ``<app>.tasks``, so the
project lists it explicitly (see docs/labelstudio.md).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from annotation.integrations.labelstudio.services import ls_webhook_ingest
from annotation.models import LabelStudioLink


@shared_task(name="annotation.integrations.labelstudio.tasks.ls_ingest_annotation", acks_late=True)
def ls_ingest_annotation(link_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    # acks_late is safe: ingest is idempotent on the LS annotation id.
    link = LabelStudioLink.objects.select_related("project__taxonomy_version").get(id=link_id)
    result = ls_webhook_ingest(link=link, payload=payload)
    return {"status": result.status, "annotation": result.annotation_id, "reason": result.reason}
