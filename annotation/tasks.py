"""Celery entry points for annotation work: ids and JSON in, a service call, a JSON summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from annotation.models import Project
from annotation.services.clips import clips_import_folder, clips_import_manifest
from annotation.services.tasks import assignments_expire
from annotation.services.taxonomies import (
    taxonomy_import_job_run,
    taxonomy_import_jobs_fail_stale,
)


@shared_task(name="annotation.tasks.import_clips")
def import_clips(
    project_id: int,
    *,
    folder: str | None = None,
    manifest: str | None = None,
    labels_from_folders: bool = False,
) -> dict[str, Any]:
    project = Project.objects.select_related("taxonomy_version").get(id=project_id)
    if folder:
        job = clips_import_folder(
            project=project, folder=Path(folder), labels_from_folders=labels_from_folders
        )
    else:
        job = clips_import_manifest(project=project, manifest=Path(str(manifest)))
    return {
        "import_job": job.id,
        "imported": job.n_imported,
        "duplicate": job.n_duplicate,
        "failed": job.n_failed,
        "labelled": job.n_labels,
    }


@shared_task(name="annotation.tasks.expire_leases")
def expire_leases() -> int:
    """Return lapsed task leases to the queue (scheduled every minute by beat)."""
    return assignments_expire()


@shared_task(name="annotation.tasks.import_taxonomy")
def import_taxonomy(job_id: int) -> dict[str, Any]:
    """Write a large taxonomy (a queued TaxonomyImportJob) on a CPU worker."""
    job = taxonomy_import_job_run(job_id=job_id)
    return {"job": job.pk, "status": job.status, "version": job.version_id, "error": job.error}


@shared_task(name="annotation.tasks.fail_stale_taxonomy_imports")
def fail_stale_taxonomy_imports() -> int:
    """Taxonomy import jobs whose worker died are marked failed (scheduled by beat)."""
    return taxonomy_import_jobs_fail_stale()
