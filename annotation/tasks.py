"""Celery entry points for annotation work: ids and JSON in, a service call, a JSON summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from annotation.models import Project
from annotation.services.clips import (
    CHUNK_SIZE,
    clips_import_bucket,
    clips_import_folder,
    clips_import_manifest,
    import_job_claim,
)
from annotation.services.tasks import assignments_expire
from annotation.services.taxonomies import (
    taxonomy_import_job_run,
    taxonomy_import_jobs_fail_stale,
)
from annotation.services.visuals import clips_visuals_make


@shared_task(name="annotation.tasks.import_clips")
def import_clips(
    project_id: int,
    *,
    folder: str | None = None,
    manifest: str | None = None,
    bucket: str | None = None,
    labels_from_folders: bool = False,
    job_id: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, Any]:
    """Import a folder, a manifest or a bucket (``s3://bucket/prefix``) on a ``cpu`` worker. With
    ``job_id`` (queued by the clips page, or the orphan sweep resending a job) it claims and runs
    that job, or does nothing when another worker has it or it ended."""
    project = Project.objects.select_related("taxonomy_version").get(id=project_id)
    job = None
    if job_id is not None:
        job = import_job_claim(job_id=job_id)
        if job is None:
            return {"import_job": job_id, "skipped": "not queued (claimed elsewhere or ended)"}
    if bucket:
        job = clips_import_bucket(
            project=project,
            uri=bucket,
            labels_from_folders=labels_from_folders,
            job=job,
            chunk_size=chunk_size,
        )
    elif folder:
        job = clips_import_folder(
            project=project,
            folder=Path(folder),
            labels_from_folders=labels_from_folders,
            job=job,
            chunk_size=chunk_size,
        )
    else:
        job = clips_import_manifest(
            project=project, manifest=Path(str(manifest)), job=job, chunk_size=chunk_size
        )
    return {
        "import_job": job.id,
        "imported": job.n_imported,
        "duplicate": job.n_duplicate,
        "failed": job.n_failed,
        "labelled": job.n_labels,
    }


@shared_task(name="annotation.tasks.make_clip_visuals")
def make_clip_visuals(clip_ids: list[int]) -> dict[str, int]:
    """Waveforms and spectrograms of clips that have none (uploads; a page asking for a missing one)."""
    return clips_visuals_make(clip_ids=clip_ids)


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
