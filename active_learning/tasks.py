"""Celery entry points for features and models: ids and JSON in, a service call, a JSON summary out.

Queues come from the routes in settings: ``extract_*`` run on ``cpu``, ``train_*`` on ``gpu`` (a CPU
worker started with ``-Q default,cpu,gpu`` consumes them too; training picks CUDA when it has one).

``extract_features_for_project`` fans its chunks out as a chord and *replaces itself* with it
(``Task.replace``): the chord's callback inherits the project task's id, so a caller holding the
project task's ``AsyncResult`` gets the finalize summary from ``.get()`` once extraction is done, and
nothing ever waits inside a task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, chord, shared_task
from celery.signals import worker_process_init

from active_learning.models import FeatureSet, JobStatus, ModelVersion
from active_learning.services.features import (
    FeatureBackendError,
    backend_import_libraries,
    feature_set_extract_chunk,
    feature_set_finalize,
    feature_set_for_extraction,
    feature_set_mark_running,
    feature_set_pending_chunks,
    feature_set_summary,
)
from active_learning.services.training import (
    model_version_claim,
    model_version_request,
    model_version_run,
    model_version_summary,
)
from annotation.models import Project

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _import_audio_libraries(**_: Any) -> None:
    # Once per worker process, not per task: the audio modules, and (on the first chunk) the
    # backend with its filterbanks, cached for the process's life by ``backend_for``. Nothing heavy
    # here: a child that is not up within worker_proc_alive_timeout (4 s) is killed and restarted.
    try:
        backend_import_libraries()
    except ImportError:  # a worker without audio libraries can still train and detect
        logger.exception("audio libraries unavailable on this worker")


# acks_late + reject_on_worker_lost: it finds the unfinished set (or plans one) and chords the chunks
# whose files are missing; run twice, it sends chunks that the first run's messages then skip.
@shared_task(
    name="active_learning.tasks.extract_features_for_project",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def extract_features_for_project(
    self: Task, project_id: int, backend: str | None = None, feature_set_id: int | None = None
) -> dict[str, Any]:
    project = Project.objects.get(id=project_id)
    try:
        fs = (
            FeatureSet.objects.get(id=feature_set_id)
            if feature_set_id is not None
            else feature_set_for_extraction(project=project, backend=backend)
        )
    except FeatureBackendError as exc:
        return {"status": JobStatus.FAILED, "error": str(exc), "backend": backend}
    if fs.status in (JobStatus.DONE, JobStatus.FAILED):
        return feature_set_summary(feature_set=fs)
    feature_set_mark_running(feature_set=fs)
    pending = feature_set_pending_chunks(feature_set=fs)
    finalize = extract_features_finalize.si(fs.id)
    if not pending:
        return self.replace(finalize)  # type: ignore[no-any-return]
    header = [extract_features_chunk.si(fs.id, c, ids) for c, ids in pending]
    return self.replace(chord(header, finalize))  # type: ignore[no-any-return]


# acks_late + reject_on_worker_lost: a chunk whose file exists is skipped, and the file is written
# atomically, so a killed chunk is redone from scratch once, by whoever gets the requeued message.
@shared_task(
    name="active_learning.tasks.extract_features_chunk",
    acks_late=True,
    reject_on_worker_lost=True,
)
def extract_features_chunk(feature_set_id: int, chunk_index: int, clip_ids: list[int]) -> dict:
    fs = FeatureSet.objects.get(id=feature_set_id)
    if fs.status in (JobStatus.DONE, JobStatus.FAILED):
        return {"chunk": chunk_index, "skipped": True, "status": fs.status}
    return feature_set_extract_chunk(
        feature_set=fs, chunk_index=chunk_index, clip_ids=clip_ids
    ).as_json()


# acks_late + reject_on_worker_lost: consolidation is atomic and recounts from the chunk files; a
# set already done is returned unchanged.
@shared_task(
    name="active_learning.tasks.extract_features_finalize",
    acks_late=True,
    reject_on_worker_lost=True,
)
def extract_features_finalize(feature_set_id: int) -> dict[str, Any]:
    fs = feature_set_finalize(feature_set=FeatureSet.objects.get(id=feature_set_id))
    return feature_set_summary(feature_set=fs)


# acks_late: the version is claimed queued -> running by a conditional UPDATE (and a message without
# a version id finds its row by task id), so a redelivery trains nothing twice. No
# reject_on_worker_lost: a requeued message would find the row running and skip it; the orphan sweep
# resumes it with a bounded number of attempts, so a training that kills its worker (out of memory)
# fails after REFRAIN_JOB_MAX_ATTEMPTS instead of looping.
@shared_task(name="active_learning.tasks.train_project_model", bind=True, acks_late=True)
def train_project_model(
    self: Task,
    project_id: int,
    trigger: str = ModelVersion.Trigger.MANUAL,
    model_version_id: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    kind: str = "hierarchical",
) -> dict[str, Any]:
    if model_version_id is not None:
        mv = ModelVersion.objects.get(id=model_version_id)
    else:
        # Keyed by this message's id: a redelivery finds the same row and the claim below stops it.
        mv = model_version_request(
            project=Project.objects.get(id=project_id),
            trigger=trigger,
            kind=kind,
            n_folds=n_folds,
            seed=seed,
            task_id=self.request.id,
        )
    if not model_version_claim(model_version=mv):
        return {**model_version_summary(model_version=mv), "skipped": True}
    return model_version_summary(model_version=model_version_run(model_version=mv))
