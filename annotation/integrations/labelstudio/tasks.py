"""Celery entry points for Label Studio: ids and JSON in, a service call, a JSON summary out.

The worker must import this module: ``refrain.celery`` autodiscovers only ``<app>.tasks``, so the
project lists it explicitly (see docs/labelstudio.md).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from annotation.integrations.labelstudio.services import (
    LabelStudioConfigMismatch,
    LabelStudioSyncError,
    ls_clips_to_push,
    ls_config_update,
    ls_pull_annotations,
    ls_push_tasks,
    ls_relabels_request,
    ls_webhook_ingest,
)
from annotation.models import LabelStudioLink


@shared_task(name="annotation.integrations.labelstudio.tasks.ls_ingest_annotation", acks_late=True)
def ls_ingest_annotation(link_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    # acks_late is safe: ingest is idempotent on the LS annotation id.
    link = LabelStudioLink.objects.select_related("project__taxonomy_version").get(id=link_id)
    result = ls_webhook_ingest(link=link, payload=payload)
    return {"status": result.status, "annotation": result.annotation_id, "reason": result.reason}


logger = logging.getLogger(__name__)


# Acked early: a lost message is caught up by the reconciliation (it asks for every relabel task
# not asked yet); asking twice for one relabel task changes nothing.
@shared_task(name="annotation.integrations.labelstudio.tasks.ls_request_relabels")
def ls_request_relabels(task_ids: list[int]) -> dict[str, Any]:
    """Reopen the Label Studio tasks of these routed relabel tasks for one more annotator each."""
    return ls_relabels_request(task_ids=task_ids)


# Acked early and not retried: a lost reconciliation is simply the next one (beat, every
# REFRAIN_LS_RECONCILE_SECONDS); pulls are idempotent.
@shared_task(name="annotation.integrations.labelstudio.tasks.ls_reconcile_links")
def ls_reconcile_links() -> dict[str, Any]:
    """Pull every link: what a missed or failed webhook left behind arrives within one period.
    Then ask for the second opinions that routed relabel tasks still want (a lost
    ``ls_request_relabels``, an answer that was not blind). One unreachable Label Studio does not
    stop the others."""
    out: dict[str, Any] = {}
    for link in LabelStudioLink.objects.select_related("project__taxonomy_version"):
        try:
            summary = ls_pull_annotations(link=link)
        except LabelStudioSyncError as exc:
            logger.warning("Label Studio link %s: reconciliation failed: %s", link.id, exc)
            out[str(link.id)] = {"error": str(exc)}
            continue
        out[str(link.id)] = {
            "created": summary.created,
            "existing": summary.existing,
            "errors": len(summary.errors),
        }
    relabels = ls_relabels_request()
    out["relabels"] = {
        "asked": len(relabels["asked"]),
        "waiting": relabels["waiting"],
        "errors": relabels["errors"],
    }
    return out


@shared_task(name="annotation.integrations.labelstudio.tasks.ls_update_config")
def ls_update_config(link_id: int) -> dict[str, Any]:
    """Give a linked Label Studio project the config of its project's new taxonomy version; a
    mismatch or an unreachable Label Studio is reported (``manage.py labelstudio update-config``
    retries by hand), never retried in a loop."""
    link = LabelStudioLink.objects.select_related(
        "project__taxonomy_version", "taxonomy_version"
    ).get(id=link_id)
    try:
        update = ls_config_update(link=link)
    except (LabelStudioSyncError, LabelStudioConfigMismatch) as exc:
        logger.warning("Label Studio link %s: config not updated: %s", link.id, exc)
        return {"error": str(exc)}
    logger.info("Label Studio link %s: %s", link.id, update.summary())
    return {"summary": update.summary(), "diff": update.diff}


# Acked early: pushing and pulling are idempotent, so an admin who sees nothing happen presses the
# button again. An unreachable Label Studio is the job's answer, not a retry loop.
@shared_task(name="annotation.integrations.labelstudio.tasks.ls_push_link")
def ls_push_link(link_id: int) -> dict[str, Any]:
    """Push the project's ready clips that Label Studio does not hold yet (the settings page)."""
    link = LabelStudioLink.objects.select_related("project__taxonomy_version").get(id=link_id)
    try:
        summary = ls_push_tasks(link=link, clips=ls_clips_to_push(link=link))
    except LabelStudioSyncError as exc:
        logger.warning("Label Studio link %s: push failed: %s", link.id, exc)
        return {"error": str(exc)}
    out = {
        "created": summary.created,
        "already": summary.already,
        "reconciled": summary.reconciled,
        "skipped": len(summary.skipped),
    }
    logger.info("Label Studio link %s: pushed %s", link.id, out)
    return out


@shared_task(name="annotation.integrations.labelstudio.tasks.ls_pull_link")
def ls_pull_link(link_id: int) -> dict[str, Any]:
    """Pull one link now (the settings page); the beat's reconciliation does the same for all."""
    link = LabelStudioLink.objects.select_related("project__taxonomy_version").get(id=link_id)
    try:
        summary = ls_pull_annotations(link=link)
    except LabelStudioSyncError as exc:
        logger.warning("Label Studio link %s: pull failed: %s", link.id, exc)
        return {"error": str(exc)}
    out = {"created": summary.created, "existing": summary.existing, "errors": summary.errors[:20]}
    logger.info("Label Studio link %s: pulled %s", link.id, out)
    return out
