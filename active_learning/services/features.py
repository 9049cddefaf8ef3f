"""Feature extraction: a project's ready clips embedded in resumable chunks into one mmap-able matrix.

The life of a :class:`~active_learning.models.FeatureSet`:

1. :func:`feature_set_create` fixes the plan: the backend (name, version, dimension) and the clip ids
   in chunks of ``chunk_size``, written as ``fs_<id>.plan.npy`` next to the future matrix, in the
   artifacts storage (``active_learning.artifacts``: a local folder or a bucket).
2. :func:`feature_set_extract_chunk` embeds one chunk and writes it atomically with
   :class:`~active_learning.core.features.FeatureStore`; a chunk whose file exists is skipped, so a
   redelivered or re-run chunk costs nothing and a killed worker loses at most its chunk.
3. :func:`feature_set_finalize` stacks the chunks into ``fs_<id>.npy`` (N, D) float32 + sidecar and
   recounts progress from the files (the per-chunk counters are for watching, the files are the truth).

The Celery fan-out lives in ``active_learning.tasks``; :func:`feature_set_extract_sync` runs the same
steps in-process for the CLI and the benchmarks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from active_learning.artifacts import (
    StorageBlobs,
    artifact_read,
    artifact_write,
    musicnn_install_dir,
    musicnn_weights_local,
)
from active_learning.core.features import (
    CHECKPOINT_BACKENDS,
    DEFAULT_BACKEND,
    AudioDecodeError,
    EmbeddingBackend,
    FeatureStore,
    backend_name,
    decode_audio,
    get_backend,
    is_model_file,
)
from active_learning.models import FeatureSet, JobStatus
from active_learning.selectors import feature_set_arrays
from annotation.models import Clip, Project
from annotation.services.audio_source import clip_audio_open
from annotation.services.clip_files import ClipFileUnavailable
from refrain.errors import Invalid
from refrain.jobs import fault_point, heartbeat, holder_fields, sweep_note

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64


class FeatureBackendError(Invalid, ValueError):
    """The requested embedding backend cannot be built here (unknown name, missing weights)."""


# --------------------------------------------------------------------------------------------------
# Backends: resolved by name, built once per process
# --------------------------------------------------------------------------------------------------


def musicnn_weights_dir() -> Path | None:
    """A local folder with the musicnn checkpoints, never fetched from the internet at run time.

    In order: ``MUSICNN_WEIGHTS_DIR`` (an operator's explicit folder); ``models/musicnn/`` in the
    artifacts storage (seeded by ``make install`` or ``manage.py artifacts_seed``; from a bucket,
    copied into the local cache once); the folder ``make install`` fetched into
    (``var/models/musicnn`` of the checkout, for processes started with a scratch storage).
    """
    explicit = os.environ.get("MUSICNN_WEIGHTS_DIR", "") or str(
        getattr(settings, "MUSICNN_WEIGHTS_DIR", "") or ""
    )
    if explicit and Path(explicit).is_dir() and any(Path(explicit).iterdir()):
        return Path(explicit)
    stored = musicnn_weights_local()
    if stored is not None:
        return stored
    installed = musicnn_install_dir()
    if installed.is_dir() and any(installed.iterdir()):
        return installed
    return None


def backend_resolve(name: str | None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
    """(registry name, backend options) for a name, a model file path, or None (default).

    A path to a model file means the ``torch-export`` backend (``.pt2``) or the ``torchscript`` one
    (other suffixes) with that ``path``. A musicnn backend must find its weights here, but their
    local folder is not an option: it differs between machines (each worker's cache), and the
    options are part of a feature set's identity; :func:`backend_for` fills it in.
    """
    opts = dict(options or {})
    name = name or DEFAULT_BACKEND
    if "+" in name:
        parts = name.split("+")
        for part in parts:
            if part in CHECKPOINT_BACKENDS or is_model_file(part):
                raise FeatureBackendError(
                    f"{name}: a combined backend joins registered names; a model file stands alone"
                )
        return name, {part: backend_resolve(part, opts.get(part))[1] for part in parts}
    if name not in CHECKPOINT_BACKENDS and is_model_file(name):
        opts.setdefault("path", name)
        name = backend_name(name)
    if name.startswith("musicnn") and "weights_dir" not in opts:
        _musicnn_weights_or_raise(name)
    if name in CHECKPOINT_BACKENDS and "path" in opts:
        opts["path"] = str(Path(opts["path"]).resolve())
    return name, opts


def _musicnn_weights_or_raise(name: str) -> Path:
    found = musicnn_weights_dir()
    if found is None:
        raise FeatureBackendError(
            f"{name}: no musicnn weights in the artifact storage; run `make install` (or "
            "`manage.py artifacts_seed` after fetching them) or set MUSICNN_WEIGHTS_DIR"
        )
    return found


def _local_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options with this machine's musicnn weights folder filled in (a set's stored options never
    name one; an older row's folder that this machine lacks is replaced)."""
    if "+" in name:
        return {part: _local_options(part, options.get(part) or {}) for part in name.split("+")}
    if name.startswith("musicnn"):
        stored = options.get("weights_dir")
        if not stored or not Path(stored).is_dir():
            return {**options, "weights_dir": str(_musicnn_weights_or_raise(name))}
    return options


_BACKENDS: dict[str, EmbeddingBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def backend_for(name: str, options: dict[str, Any]) -> EmbeddingBackend:
    """The backend instance for (name, options), built once per process (weights, filterbanks)."""
    key = json.dumps([name, options], sort_keys=True, default=str)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            local = _local_options(name, options)
            try:
                _BACKENDS[key] = get_backend(name, **local)
            except (KeyError, FileNotFoundError, ValueError, OSError) as exc:
                raise FeatureBackendError(f"{name}: {exc}") from exc
        return _BACKENDS[key]


def backend_import_libraries() -> None:
    """Import the decoding/resampling/filterbank modules (cheap: librosa loads lazily)."""
    import librosa  # noqa: F401
    import soundfile  # noqa: F401
    import soxr  # noqa: F401


def backend_warm_up(name: str = DEFAULT_BACKEND, options: dict[str, Any] | None = None) -> None:
    """Build a backend and run it once (filterbanks, numba JIT, weights): for benchmarks."""
    backend = backend_for(*backend_resolve(name, options))
    backend.embed(np.zeros(22050, dtype=np.float32), 22050)


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def _store_prefix(project: Project) -> str:
    return f"project_{project.id}/features"


def _store_of(feature_set: FeatureSet) -> tuple[FeatureStore, str]:
    """The FeatureStore (over the artifacts storage) and set name behind a row.

    Its ``store_key`` is the matrix key, ``project_<id>/features/fs_<id>.npy``.
    """
    folder, _, file = feature_set.store_key.rpartition("/")
    return FeatureStore(StorageBlobs(), prefix=folder), file.removesuffix(".npy")


def _plan_key(feature_set: FeatureSet) -> str:
    store, name = _store_of(feature_set)
    return store.key(f"{name}.plan.npy")


# --------------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------------


def feature_set_create(
    *,
    project: Project,
    backend: str | None = None,
    options: dict[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> FeatureSet:
    """A queued FeatureSet over the project's ready clips, with its chunk plan on disk.

    Raises
    ------
    FeatureBackendError
        If the backend cannot be built (so no row is left behind for an impossible job).
    """
    name, opts = backend_resolve(backend or project.loop_policy.embedding_backend, options)
    instance = backend_for(name, opts)
    clip_ids = np.asarray(
        Clip.objects.filter(project=project, status=Clip.Status.READY)
        .order_by("id")
        .values_list("id", flat=True),
        dtype=np.int64,
    )
    chunk_size = max(1, int(chunk_size))
    with transaction.atomic():
        fs = FeatureSet.objects.create(
            project=project,
            backend=name,
            backend_version=str(instance.version),
            options=opts,
            dim=int(instance.dim),
            n_clips=int(clip_ids.size),
            chunk_size=chunk_size,
            n_chunks=-(-int(clip_ids.size) // chunk_size),
        )
        fs.store_key = f"{_store_prefix(project)}/fs_{fs.id}.npy"
        fs.save(update_fields=["store_key"])
        buf = io.BytesIO()
        np.save(buf, clip_ids)
        # Inside the transaction: a storage that refuses the plan leaves no row behind.
        artifact_write(_plan_key(fs), buf.getvalue())
    return fs


def feature_set_plan(*, feature_set: FeatureSet) -> list[list[int]]:
    """The clip ids of every chunk, in chunk order."""
    ids = np.load(io.BytesIO(artifact_read(_plan_key(feature_set)))).tolist()
    size = feature_set.chunk_size
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def feature_set_pending_chunks(*, feature_set: FeatureSet) -> list[tuple[int, list[int]]]:
    """(chunk index, clip ids) of the chunks whose files are not written yet."""
    store, name = _store_of(feature_set)
    plan = feature_set_plan(feature_set=feature_set)
    return [(c, plan[c]) for c in store.pending_chunks(name, len(plan))]


def feature_set_for_extraction(
    *, project: Project, backend: str | None = None, options: dict[str, Any] | None = None
) -> FeatureSet:
    """The feature set an extraction request should work on, creating one only when needed.

    An unfinished set for the same backend is resumed; a done one that covers every ready clip is
    returned as it is; otherwise (new clips, or none yet) a new set is planned.
    """
    name, opts = backend_resolve(backend or project.loop_policy.embedding_backend, options)
    same = FeatureSet.objects.filter(project=project, backend=name, options=opts)
    unfinished = same.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).first()
    if unfinished is not None:
        return unfinished
    done = same.filter(status=JobStatus.DONE).first()
    if done is not None:
        ready = Clip.objects.filter(project=project, status=Clip.Status.READY)
        newer = ready.filter(created_at__gt=done.created_at).exists()
        if not newer and ready.count() == done.n_clips:
            return done
    return feature_set_create(project=project, backend=name, options=opts)


def feature_set_mark_running(*, feature_set: FeatureSet) -> bool:
    """Claim queued -> running; False when another delivery or a previous run already did."""
    claimed = FeatureSet.objects.filter(id=feature_set.id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, attempts=F("attempts") + 1, **holder_fields()
    )
    feature_set.refresh_from_db()
    return bool(claimed)


def feature_set_requeue(*, feature_set: FeatureSet, action: str, reason: str) -> bool:
    """running (its worker gone) -> queued again, with a note; False if the row moved meanwhile.

    Conditional on the row as the caller saw it, so of two sweeps only one requeues it; the
    caller sends the extraction again, which extracts only the chunks whose files are missing.
    """
    fs = feature_set
    return bool(
        FeatureSet.objects.filter(
            id=fs.id, status=fs.status, worker=fs.worker, heartbeat_at=fs.heartbeat_at
        ).update(
            status=JobStatus.QUEUED,
            worker="",
            worker_pid=None,
            heartbeat_at=timezone.now(),
            sweep_notes=[*fs.sweep_notes, sweep_note(action, reason)],
        )
    )


# --------------------------------------------------------------------------------------------------
# Chunks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkResult:
    chunk: int
    n_done: int
    n_failed: int
    skipped: bool
    n_reused: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "done": self.n_done,
            "failed": self.n_failed,
            "skipped": self.skipped,
            "reused": self.n_reused,
        }


@dataclass(frozen=True)
class _Donor:
    """Rows of an earlier done set with the same backend, version and options."""

    rows: dict[int, int]  # clip id -> row
    X: np.ndarray


_DONORS: dict[int, _Donor] = {}


def _donor(feature_set: FeatureSet) -> _Donor | None:
    """The newest earlier done set that embedded the same way, so a set planned because new clips
    arrived copies the rows it already has and embeds only the new clips."""
    prev = (
        FeatureSet.objects.filter(
            project_id=feature_set.project_id,
            backend=feature_set.backend,
            backend_version=feature_set.backend_version,
            options=feature_set.options,
            dim=feature_set.dim,
            status=JobStatus.DONE,
            id__lt=feature_set.id,
        )
        .order_by("-id")
        .first()
    )
    if prev is None:
        return None
    if prev.id not in _DONORS:
        try:
            ids, X = feature_set_arrays(feature_set=prev)
        except OSError:  # its files are gone: embed from scratch
            return None
        _DONORS.clear()  # keep one: a worker serves one extraction at a time
        _DONORS[prev.id] = _Donor({int(c): i for i, c in enumerate(ids.tolist())}, X)
    return _DONORS[prev.id]


def _clip_audio(clip: Clip) -> tuple[np.ndarray, int]:
    # Only files inside the import roots or in a storage (bucket audio is streamed into the local
    # cache), never a failed clip; the header's frame count is checked against
    # REFRAIN_MAX_DECODED_FRAMES before a sample is decoded.
    try:
        path = clip_audio_open(clip)
    except ClipFileUnavailable as exc:
        raise AudioDecodeError(str(exc)) from exc
    segment = clip.segment_start_s is not None or clip.segment_end_s is not None
    audio, sr = decode_audio(
        path,
        max_frames=settings.REFRAIN_MAX_DECODED_FRAMES,
        start_s=clip.segment_start_s,
        end_s=clip.segment_end_s,
    )
    if segment and audio.size == 0:
        raise AudioDecodeError(f"{clip.file_path}: segment holds no samples")
    return audio, sr


def feature_set_extract_chunk(
    *, feature_set: FeatureSet, chunk_index: int, clip_ids: list[int]
) -> ChunkResult:
    """Embed one chunk's clips and write the chunk file; a clip that fails is listed, not fatal.

    Clips an earlier done set of the same backend, version and options already embedded are copied
    from it, not decoded again. Idempotent: a chunk whose file already exists is skipped without
    touching the counters.
    """
    store, name = _store_of(feature_set)
    if chunk_index in store.done_chunks(name):
        return ChunkResult(chunk_index, 0, 0, skipped=True)
    attempt = _chunk_attempt(store, name, chunk_index)
    if attempt > settings.REFRAIN_JOB_MAX_ATTEMPTS:
        return _chunk_give_up(feature_set, store, name, chunk_index, clip_ids, lost=attempt - 1)
    # This worker now holds the set (the latest chunk's worker is the one shown and checked).
    FeatureSet.objects.filter(id=feature_set.id, status=JobStatus.RUNNING).update(**holder_fields())
    with heartbeat(FeatureSet, feature_set.id):
        fault_point(f"features.chunk:{chunk_index}")
        return _extract_chunk(feature_set, store, name, chunk_index, clip_ids)


def _chunk_attempt(store: FeatureStore, name: str, chunk_index: int) -> int:
    """Count one more start of a chunk (a file beside the chunk files); the starts so far.

    A chunk is started again only when no earlier start finished it: its worker died.
    """
    key = f"{store.chunk_folder(name)}/{chunk_index:06d}.attempts"
    try:
        n = int(artifact_read(key)) + 1
    except (FileNotFoundError, ValueError):
        n = 1
    artifact_write(key, str(n).encode())
    return n


def _chunk_give_up(
    feature_set: FeatureSet,
    store: FeatureStore,
    name: str,
    chunk_index: int,
    clip_ids: list[int],
    *,
    lost: int,
) -> ChunkResult:
    """Its worker died on every start (a clip that exhausts memory, a crashing decoder): list the
    chunk's clips as failed and write it empty, so a redelivered message cannot loop forever and
    the rest of the set completes."""
    reason = f"the worker embedding this clip's chunk was lost {lost} times; not embedded"
    failures = {str(cid): reason for cid in clip_ids}
    store.write_chunk(
        name,
        chunk_index,
        np.zeros((0, feature_set.dim or 0), dtype=np.float32),
        [],
        backend=feature_set.backend,
        version=feature_set.backend_version,
        failures=failures,
    )
    _record_chunk_progress(feature_set, n_done=0, failures=failures)
    logger.error(
        "feature set %s: chunk %s given up after %s lost workers", feature_set.id, chunk_index, lost
    )
    return ChunkResult(chunk_index, 0, len(failures), skipped=False)


def _extract_chunk(
    feature_set: FeatureSet, store: FeatureStore, name: str, chunk_index: int, clip_ids: list[int]
) -> ChunkResult:
    donor = _donor(feature_set)
    backend: EmbeddingBackend | None = None
    clips = {c.id: c for c in Clip.objects.filter(id__in=clip_ids)}
    t0 = time.perf_counter()
    logger.info(
        "features %s (%s): chunk %d, %d clips", feature_set.id, feature_set.backend,
        chunk_index, len(clip_ids),
    )  # fmt: skip
    rows: list[np.ndarray] = []
    ok_ids: list[str] = []
    failures: dict[str, str] = {}
    n_reused = 0
    for cid in clip_ids:
        if donor is not None and cid in donor.rows and cid in clips:
            rows.append(np.asarray(donor.X[donor.rows[cid]], dtype=np.float32))
            ok_ids.append(str(cid))
            n_reused += 1
            continue
        if backend is None:  # built only when a clip needs embedding (musicnn loads weights)
            backend = backend_for(feature_set.backend, feature_set.options)
        clip = clips.get(cid)
        if clip is None or not clip.file_path:
            failures[str(cid)] = "clip no longer exists" if clip is None else "clip has no file"
            continue
        try:
            audio, sr = _clip_audio(clip)
            vec = np.asarray(backend.embed(audio, sr), dtype=np.float32).reshape(-1)
        except AudioDecodeError as exc:
            failures[str(cid)] = str(exc)
            logger.warning("features %s: clip %s failed: %s", feature_set.id, cid, exc)
            continue
        except Exception as exc:  # one bad clip must not sink its chunk
            logger.exception("feature extraction failed for clip %s", cid)
            failures[str(cid)] = f"embedding failed: {type(exc).__name__}: {exc}"
            continue
        if vec.shape != (feature_set.dim,) or not np.all(np.isfinite(vec)):
            failures[str(cid)] = f"embedding has shape {vec.shape} or non-finite values"
            continue
        rows.append(vec)
        ok_ids.append(str(cid))
    X = np.stack(rows) if rows else np.zeros((0, feature_set.dim or 0), dtype=np.float32)
    store.write_chunk(
        name,
        chunk_index,
        X,
        ok_ids,
        backend=feature_set.backend,
        version=feature_set.backend_version,
        failures=failures,
    )
    _record_chunk_progress(feature_set, n_done=len(ok_ids), failures=failures)
    logger.info(
        "features %s: chunk %d done in %.1f s: %d embedded (%d reused), %d failed",
        feature_set.id, chunk_index, time.perf_counter() - t0, len(ok_ids), n_reused,
        len(failures),
    )  # fmt: skip
    return ChunkResult(chunk_index, len(ok_ids), len(failures), skipped=False, n_reused=n_reused)


def _record_chunk_progress(
    feature_set: FeatureSet, *, n_done: int, failures: dict[str, str]
) -> None:
    with transaction.atomic():
        # Counters with F() so concurrent chunks never lose an increment.
        FeatureSet.objects.filter(id=feature_set.id).update(
            n_done=F("n_done") + n_done, n_failed=F("n_failed") + len(failures)
        )
        if failures:
            # The list needs read-modify-write: hold the row lock while appending.
            row = FeatureSet.objects.select_for_update().only("failures").get(id=feature_set.id)
            row.failures = [
                *row.failures,
                *({"clip": int(c), "reason": r} for c, r in failures.items()),
            ]
            row.save(update_fields=["failures"])


# --------------------------------------------------------------------------------------------------
# Finalize
# --------------------------------------------------------------------------------------------------


def feature_set_finalize(*, feature_set: FeatureSet) -> FeatureSet:
    """Consolidate the chunks into the matrix, recount from the files, mark done (or failed).

    Idempotent: a set already done is returned unchanged; chunks still missing leave it running. A
    failed set (cancelled by an admin, given up by the sweep) is left as it is: its chunks stopped.
    """
    feature_set.refresh_from_db()
    if feature_set.status in (JobStatus.DONE, JobStatus.FAILED):
        return feature_set
    store, name = _store_of(feature_set)
    if not store.exists(name):
        if feature_set.n_chunks == 0:
            return _fail(feature_set, "the project has no ready clips")
        pending = feature_set_pending_chunks(feature_set=feature_set)
        if pending:
            missing = [c for c, _ in pending]
            feature_set.error = f"{len(missing)} chunk(s) not written yet: {missing[:20]}"
            feature_set.save(update_fields=["error"])
            return feature_set
        store.consolidate(name)
    loaded = store.load(name)
    failures = loaded.meta.get("failures", {})
    feature_set.n_done = len(loaded.clip_ids)
    feature_set.n_failed = len(failures)
    feature_set.failures = [{"clip": int(c), "reason": r} for c, r in failures.items()]
    feature_set.dim = loaded.dim
    feature_set.finished_at = timezone.now()
    if feature_set.n_done == 0:
        feature_set.status = JobStatus.FAILED
        feature_set.error = "no clip could be embedded"
    else:
        feature_set.status = JobStatus.DONE
        feature_set.error = ""
    feature_set.save()
    return feature_set


def _fail(feature_set: FeatureSet, reason: str) -> FeatureSet:
    feature_set.status = JobStatus.FAILED
    feature_set.error = reason
    feature_set.finished_at = timezone.now()
    feature_set.save(update_fields=["status", "error", "finished_at"])
    return feature_set


def feature_set_fail(*, feature_set: FeatureSet, reason: str) -> FeatureSet:
    """Mark a set failed with a reason (a backend that cannot be built, a broken plan)."""
    return _fail(feature_set, reason)


def feature_set_summary(*, feature_set: FeatureSet) -> dict[str, Any]:
    """The JSON a task or command reports."""
    return {
        "feature_set": feature_set.id,
        "backend": feature_set.backend,
        "backend_version": feature_set.backend_version,
        "status": feature_set.status,
        "dim": feature_set.dim,
        "n_clips": feature_set.n_clips,
        "done": feature_set.n_done,
        "failed": feature_set.n_failed,
        "left": feature_set.n_left,
        "error": feature_set.error,
    }


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def feature_set_start(
    *, project: Project, backend: str | None = None, options: dict[str, Any] | None = None
) -> FeatureSet:
    """Plan (or find) the project's feature set and enqueue its extraction once the row commits."""
    # active_learning.tasks imports this module (its tasks call these services).
    from active_learning.tasks import extract_features_for_project

    fs = feature_set_for_extraction(project=project, backend=backend, options=options)
    if fs.status != JobStatus.DONE:
        extract_features_for_project.delay_on_commit(
            project.id, backend=fs.backend, feature_set_id=fs.id
        )
    return fs


def feature_set_extract_sync(
    *, project: Project, backend: str | None = None, options: dict[str, Any] | None = None
) -> FeatureSet:
    """Everything in this process: plan or resume, extract missing chunks, consolidate."""
    fs = feature_set_for_extraction(project=project, backend=backend, options=options)
    if fs.status == JobStatus.DONE:
        return fs
    feature_set_mark_running(feature_set=fs)
    for chunk, clip_ids in feature_set_pending_chunks(feature_set=fs):
        if FeatureSet.objects.filter(id=fs.id, status=JobStatus.FAILED).exists():
            break  # cancelled (quality.services.jobs): stop between chunks, as the tasks do
        feature_set_extract_chunk(feature_set=fs, chunk_index=chunk, clip_ids=clip_ids)
    return feature_set_finalize(feature_set=fs)
