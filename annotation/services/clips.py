"""Importing clips: folders, CSV manifests, buckets and single uploads.

Every file ends as exactly one of: imported (a ready clip), duplicate (its content is already in the
project, nothing written), or failed (a clip row with status ``failed`` and the reason, so the user
sees it and nothing is silently dropped). Labels from the source become ``import:<file>`` annotations.

Sources are confined to the import roots (:mod:`annotation.services.clip_files`): a folder, manifest
or file whose resolved path lies elsewhere is rejected, and a rejected path is listed in the job's
problems but never stored as a clip row. A bucket (``s3://bucket/prefix``) is listed page by page;
each object is streamed into the worker's audio cache, hashed and probed like a file, and its clip
keeps the object's key (the audio is read in place, never copied into the media storage). A re-run
skips the objects the project already holds without downloading them: only new objects are read.
Every imported clip gets its tag-free served copy and its visuals (waveform, spectrogram) from the
file the import has just read, so no web request ever decodes audio.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.audio import (
    SUPPORTED_EXTENSIONS,
    AudioProbe,
    AudioProbeError,
    probe_audio,
    sha256_of,
)
from annotation.models import Annotation, AnnotationLabel, Clip, ImportJob, Project
from annotation.selectors import taxonomy_index_cached
from annotation.services import buckets
from annotation.services.audio_source import media_open, object_open
from annotation.services.clip_files import ClipSourceError, served_copy_make, source_confine
from annotation.services.visuals import visuals_key, visuals_make_from_file
from refrain.errors import Invalid
from refrain.jobs import (
    delay_on_commit_or_log,
    fault_point,
    heartbeat,
    holder_fields,
    sweep_note,
    worker_identity,
)

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256
MAX_PROBLEMS_KEPT = 10_000
PROBE_THREADS = min(4, os.cpu_count() or 1)


class ImportSourceError(Invalid, ValueError):
    """The import source itself is unusable (missing folder, malformed manifest header)."""


@dataclass(frozen=True)
class ImportItem:
    # A local file; for a bucket object or a media key, the key as a path (its name is the name).
    path: Path
    labels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    external_id: str = ""
    line: int | None = None  # manifest line, for messages
    obj: buckets.BucketObject | None = None  # an object in a bucket
    media_key: str = ""  # a file in the media storage (an upload)

    @property
    def storage(self) -> tuple[str, str]:
        """(Clip.storage, Clip.storage_key) of this item, before it is resolved."""
        if self.obj is not None:
            return Clip.Storage.S3, f"{self.obj.bucket}/{self.obj.key}"
        if self.media_key:
            return Clip.Storage.MEDIA, self.media_key
        return Clip.Storage.LOCAL, str(self.path)


@dataclass
class _Probed:
    item: ImportItem
    sha256: str | None
    size: int
    probe: Any  # AudioProbe | None
    error: str
    # False for paths that must leave no row (outside the import roots).
    storable: bool = True
    real_path: Path | None = None
    served_key: str = ""
    # (start_s, end_s) windows when a long file is cut into segments; None for a whole-file clip.
    segments: list[tuple[float, float]] | None = None


def _probe(
    item: ImportItem, *, segment_s: float | None = None, make_visuals: bool = True
) -> _Probed:
    if item.obj is not None and item.obj.size > int(settings.REFRAIN_AUDIO_CACHE_BYTES):
        # Never downloaded: it could not stay in the worker's bounded cache.
        return _Probed(
            item,
            None,
            item.obj.size,
            None,
            f"{item.obj.size} bytes: larger than a worker's audio cache (REFRAIN_AUDIO_CACHE_BYTES)",
        )
    if item.obj is not None or item.media_key:
        try:
            path = object_open(item.obj) if item.obj is not None else media_open(item.media_key)
        except buckets.ObjectMissing:
            # A manifest row names an object; a listing saw it, so it went away since.
            gone = (
                "is not in the storage"
                if item.line
                else "disappeared from the bucket after it was listed"
            )
            return _Probed(item, None, 0, None, f"the object {gone}")
        except buckets.BucketUnavailable as exc:
            # The bucket itself went away (access revoked, deleted): the whole import stops.
            raise ImportSourceError(str(exc)) from exc
        return _probe_file(item, path, segment_s=segment_s, make_visuals=make_visuals)
    try:
        # Checked before anything else, so whether an outside file exists is not revealed either.
        path = source_confine(item.path)
    except ClipSourceError as exc:
        return _Probed(item, None, 0, None, exc.reason, storable=False)
    if not path.exists():
        return _Probed(item, None, 0, None, "file not found", real_path=path)
    return _probe_file(item, path, segment_s=segment_s, make_visuals=make_visuals)


def _probe_file(
    item: ImportItem, path: Path, *, segment_s: float | None, make_visuals: bool
) -> _Probed:
    """Hash and probe the local file ``path`` of ``item``; make its served copy and visuals."""
    real = path if item.obj is None and not item.media_key else None
    sha: str | None = None
    size = 0
    try:
        with path.open("rb") as fh:
            sha, size = sha256_of(fh)
    except OSError as exc:
        return _Probed(
            item, None, 0, None, f"cannot read file: {exc.strerror or exc}", real_path=real
        )
    try:
        probe = probe_audio(path)
        segments = _plan_segments(probe, segment_s=segment_s)
        # Blind mode: what annotators hear is a copy without the container's tags.
        served = served_copy_make(source=path, sha256=sha, fmt=probe.format, original=probe)
    except AudioProbeError as exc:
        return _Probed(item, sha, size, None, exc.reason, real_path=real)
    if make_visuals:
        windows = (
            [(None, None, sha)]
            if not segments
            else [(a, b, _segment_sha(sha, a, b)) for a, b in segments]
        )
        for start, end, window_sha in windows:
            try:
                visuals_make_from_file(
                    path,
                    key=visuals_key(sha256=window_sha, start_s=start, end_s=end),
                    start_s=start,
                    end_s=end,
                )
            except (RuntimeError, OSError) as exc:  # the clip stays; a worker retries on request
                logger.warning("%s: no visuals: %s", item.external_id or item.path, exc)
    return _Probed(item, sha, size, probe, "", real_path=real, served_key=served, segments=segments)


def _segment_sha(file_sha: str, start: float, end: float) -> str:
    return hashlib.sha256(f"{file_sha}:{start:.3f}-{end:.3f}".encode()).hexdigest()


def _plan_segments(
    probe: AudioProbe, *, segment_s: float | None
) -> list[tuple[float, float]] | None:
    """Windows to cut a long file into (a project with ``long_audio=segment``), else None; raises
    :class:`AudioProbeError` for a file outside the duration limits."""
    longest = float(settings.REFRAIN_MAX_CLIP_SECONDS)
    if segment_s is None or probe.duration_s <= longest:
        _check_duration(probe)
        return None
    step = min(float(segment_s), longest)
    n = math.ceil(probe.duration_s / step)
    most = int(settings.REFRAIN_MAX_SEGMENTS_PER_FILE)
    if n > most:
        raise AudioProbeError(
            f"too long: {probe.duration_s:.0f} s would make {n} segments of {step:g} s, the limit "
            f"is {most} (REFRAIN_MAX_SEGMENTS_PER_FILE)"
        )
    bounds = [(i * step, min((i + 1) * step, probe.duration_s)) for i in range(n)]
    shortest = float(settings.REFRAIN_MIN_CLIP_SECONDS)
    if bounds[-1][1] - bounds[-1][0] < shortest:
        # A tail too short to label joins the segment before it (or is dropped past the limit).
        tail_end = bounds.pop()[1]
        start, _ = bounds[-1]
        if tail_end - start <= longest:
            bounds[-1] = (start, tail_end)
    return bounds


def _check_duration(probe: AudioProbe) -> None:
    longest = float(settings.REFRAIN_MAX_CLIP_SECONDS)
    shortest = float(settings.REFRAIN_MIN_CLIP_SECONDS)
    if probe.duration_s > longest:
        raise AudioProbeError(
            f"too long: {probe.duration_s:.0f} s ({probe.frames} frames at {probe.sample_rate} Hz), "
            f"the limit is {longest:g} s (REFRAIN_MAX_CLIP_SECONDS)"
        )
    if probe.duration_s < shortest:
        raise AudioProbeError(
            f"too short: {probe.duration_s:.3f} s of decodable audio, the minimum is {shortest:g} s "
            "(REFRAIN_MIN_CLIP_SECONDS); a header claiming more data than the file holds reads "
            "this way"
        )


def folder_items(folder: Path, *, labels_from_folders: bool = False) -> Iterator[ImportItem]:
    """Every non-hidden file under ``folder``, sorted; with ``labels_from_folders`` the path of the
    containing folder relative to ``folder`` (``Rock/Punk``) is the label."""
    try:
        source_confine(folder)
    except ClipSourceError as exc:
        raise ImportSourceError(f"{folder}: {exc.reason}") from exc
    if not folder.is_dir():
        raise ImportSourceError(f"{folder} is not a folder")
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            rel_dir = path.parent.relative_to(folder)
            labels = (str(rel_dir),) if labels_from_folders and str(rel_dir) != "." else ()
            yield ImportItem(path=path, labels=labels, external_id=str(path.relative_to(folder)))


# Refrain's CSV export prefixes cells that start like a spreadsheet formula with a quote (OWASP's
# CSV-injection advice, quality/export.py); a manifest cell written that way reads back without it.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _unquote_cell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_TRIGGERS) else text


def manifest_items(manifest: Path) -> Iterator[ImportItem]:
    """Rows of a CSV manifest with a ``path`` column (relative to the manifest or absolute) and an
    optional ``labels`` column of ``|``-separated taxonomy paths or keys; other columns become
    metadata (``clip_id`` or ``id`` also becomes the external id)."""
    try:
        # A manifest outside the roots is not even read: its error messages would quote it.
        source_confine(manifest)
    except ClipSourceError as exc:
        raise ImportSourceError(f"manifest {manifest}: {exc.reason}") from exc
    if not manifest.is_file():
        raise ImportSourceError(f"manifest {manifest} not found")
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ImportSourceError(
                f"{manifest.name} line 1: a 'path' column is required; found "
                + ", ".join(reader.fieldnames or ["no header"])
            )
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns
                row.pop(None)  # type: ignore[call-overload]
            row = {k: _unquote_cell(v) if isinstance(v, str) else v for k, v in row.items()}
            raw_path = (row.pop("path") or "").strip()
            raw_labels = (row.pop("labels", "") or "").strip()
            labels = tuple(lab.strip() for lab in raw_labels.split("|") if lab.strip())
            # An export names bucket clips s3://bucket/key and uploads media:<key>: both import.
            where: dict[str, Any] = {}
            if raw_path.startswith("s3://"):
                try:
                    loc = buckets.bucket_location_parse(raw_path)
                except Invalid as exc:
                    raise ImportSourceError(f"{manifest.name} line {line}: {exc}") from exc
                path = Path(loc.prefix)
                where["obj"] = buckets.BucketObject(bucket=loc.bucket, key=loc.prefix, size=0)
            elif raw_path.startswith("media:"):
                path = Path(raw_path[len("media:") :])
                where["media_key"] = raw_path[len("media:") :]
            else:
                path = Path(raw_path)
                if not path.is_absolute():
                    path = manifest.parent / path
            external = row.get("clip_id") or row.get("id") or raw_path
            yield ImportItem(
                path=path,
                labels=labels,
                metadata={k: v for k, v in row.items() if k},
                external_id=str(external),
                line=line,
                **where,
            )


def _chunks(items: Iterable[ImportItem], size: int) -> Iterator[list[ImportItem]]:
    chunk: list[ImportItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def clips_import(
    *,
    project: Project,
    items: Iterable[ImportItem],
    source_name: str,
    user: AbstractBaseUser | None = None,
    job: ImportJob | None = None,
    max_failed_clips: int | None = None,
    options: dict[str, Any] | None = None,
    chunk_size: int = CHUNK_SIZE,
    make_visuals: bool = True,
) -> ImportJob:
    """Import ``items`` into ``project``; returns the finished :class:`ImportJob` summary.

    With ``make_visuals`` (imports on a worker or the command line) each clip's waveform and
    spectrogram are made from the file just read; an upload in a web request leaves them to a
    ``cpu`` worker.

    Bounded: the import stops after ``REFRAIN_IMPORT_MAX_FAILURES`` failed files, and at most
    ``max_failed_clips`` (default ``REFRAIN_IMPORT_MAX_FAILED_CLIPS``) of them are stored as failed
    clips; the others are only listed in the job's problems.

    Without ``job`` a new job is created, held by this process (``options``: how to read the source
    again, for a resume). With ``job`` (claimed by :func:`import_job_claim`), the import resumes it:
    the first ``job.items_done`` items were accounted for by an earlier attempt (their clips and the
    counters committed together, chunk by chunk) and are skipped, so every item counts once.
    An error fails the job with the reason (and is raised); a killed worker leaves it running for
    the sweep.
    """
    if job is None:
        job = ImportJob.objects.create(
            project=project,
            source=source_name,
            created_by=user,
            status=ImportJob.Status.RUNNING,
            options=options or {},
            attempts=1,
            **holder_fields(),
        )
    try:
        with heartbeat(ImportJob, job.pk):
            _import_items(
                project=project,
                items=items,
                source_name=source_name,
                job=job,
                max_failed_clips=max_failed_clips,
                chunk_size=chunk_size,
                make_visuals=make_visuals,
            )
    except Exception as exc:
        # Only while this process still holds it: a resume elsewhere is not failed by a straggler.
        name, pid = worker_identity()
        ImportJob.objects.filter(pk=job.pk, worker=name, worker_pid=pid).update(
            status=ImportJob.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )
        raise
    return job


def _bucket_keys_held(*, project: Project, items: list[ImportItem]) -> set[str]:
    """The storage keys among the bucket objects in ``items`` that the project already has."""
    keys = [i.storage[1] for i in items if i.obj is not None]
    if not keys:
        return set()
    return set(
        Clip.objects.filter(
            project=project, storage=Clip.Storage.S3, storage_key__in=keys
        ).values_list("storage_key", flat=True)
    )


def _import_items(
    *,
    project: Project,
    items: Iterable[ImportItem],
    source_name: str,
    job: ImportJob,
    max_failed_clips: int | None,
    chunk_size: int,
    make_visuals: bool = True,
) -> None:
    max_failures = max(1, int(settings.REFRAIN_IMPORT_MAX_FAILURES))
    if max_failed_clips is None:
        max_failed_clips = int(settings.REFRAIN_IMPORT_MAX_FAILED_CLIPS)
    n_failed_stored = n_failed_unstored = 0
    stopped = False
    if job.items_done:
        # A resume: the items an earlier attempt accounted for are skipped, not seen as duplicates
        # of their own clips.
        items = itertools.islice(items, job.items_done, None)
        n_failed_stored = Clip.objects.filter(
            project=project,
            import_source=source_name[:255],
            status=Clip.Status.FAILED,
            created_at__gte=job.started_at,
        ).count()
    index = taxonomy_index_cached(project.taxonomy_version)
    seen: set[str] = set(
        Clip.objects.filter(project=project, sha256__isnull=False).values_list("sha256", flat=True)
    )
    problems: list[dict[str, Any]] = list(job.problems)
    source_label = f"import:{source_name}"

    def note(item: ImportItem, reason: str) -> None:
        if len(problems) < MAX_PROBLEMS_KEPT:
            where = f"line {item.line}: " if item.line else ""
            problems.append({"item": f"{where}{item.external_id or item.path}", "reason": reason})

    segment_s = (
        float(project.segment_seconds) if project.long_audio == Project.LongAudio.SEGMENT else None
    )
    probe_one = functools.partial(_probe, segment_s=segment_s, make_visuals=make_visuals)
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        chunks = _chunks(items, max(1, chunk_size))
        for n_chunk, chunk in enumerate(chunks):
            if n_chunk:
                # Tests stop a worker here: the chunks before committed, the rest not begun.
                fault_point("import.chunk")
            # Objects the project already holds are duplicates without being downloaded again.
            held = _bucket_keys_held(project=project, items=chunk)
            probed = list(pool.map(probe_one, [i for i in chunk if i.storage[1] not in held]))
            probed_of = {id(p.item): p for p in probed}
            n_items = 0
            clips: list[Clip] = []
            wanted_labels: list[tuple[int, list[int]]] = []
            for item in chunk:
                if job.n_failed >= max_failures:
                    stopped = True
                    break
                n_items += 1
                p = probed_of.get(id(item))
                if p is None:
                    job.n_duplicate += 1
                    continue
                storable = p.storable and (
                    p.probe is not None or n_failed_stored < max_failed_clips
                )
                if not storable:
                    job.n_failed += 1
                    n_failed_unstored += p.storable
                    note(p.item, p.error)
                    continue
                windows: list[tuple[float | None, float | None, str | None]] = (
                    [(None, None, p.sha256)]
                    if not p.segments or p.sha256 is None
                    else [(a, b, _segment_sha(p.sha256, a, b)) for a, b in p.segments]
                )
                fresh = [w for w in windows if w[2] is None or w[2] not in seen]
                if not fresh:
                    job.n_duplicate += 1
                    continue
                node_ids: list[int] = []
                if p.probe is not None and p.item.labels:
                    unknown: list[str] = []
                    for lab in p.item.labels:
                        node = index.lookup(lab)
                        if node is None:
                            unknown.append(lab)
                        else:
                            node_ids.append(node.id)
                    if unknown:
                        note(
                            p.item,
                            f"labels not in taxonomy {index.version}: {', '.join(unknown)}",
                        )
                for start, end, sha in fresh:
                    if sha is not None:
                        seen.add(sha)
                    storage, storage_key = p.item.storage
                    clip = Clip(
                        project=project,
                        external_id=(
                            p.item.external_id
                            if start is None
                            else f"{p.item.external_id}@{start:g}-{end:g}"
                        )[:255],
                        storage=storage,
                        storage_key=str(p.real_path) if p.real_path else storage_key,
                        served_key=p.served_key,
                        original_name=p.item.path.name[:255],
                        sha256=sha,
                        size_bytes=p.size,
                        metadata=p.item.metadata,
                        import_source=source_name[:255],
                        segment_start_s=start,
                        segment_end_s=end,
                    )
                    if p.probe is None:
                        clip.status = Clip.Status.FAILED
                        clip.error = p.error
                        job.n_failed += 1
                        n_failed_stored += 1
                        note(p.item, p.error)
                    else:
                        clip.status = Clip.Status.READY
                        clip.format = p.probe.format
                        clip.duration_s = (
                            p.probe.duration_s if start is None or end is None else end - start
                        )
                        clip.sample_rate = p.probe.sample_rate
                        clip.channels = p.probe.channels
                        job.n_imported += 1
                        if node_ids:
                            wanted_labels.append((len(clips), node_ids))
                    clips.append(clip)
            with transaction.atomic():
                Clip.objects.bulk_create(clips)
                annotations = [
                    Annotation(
                        clip=clips[i],
                        taxonomy_version=index.version,
                        kind=Annotation.Kind.IMPORT,
                        source=source_label[:300],
                    )
                    for i, _ in wanted_labels
                ]
                Annotation.objects.bulk_create(annotations)
                rows = []
                for ann, (_, node_ids) in zip(annotations, wanted_labels, strict=True):
                    explicit = set(node_ids)
                    rows.extend(
                        AnnotationLabel(annotation=ann, node_id=nid, explicit=nid in explicit)
                        for nid in index.closure(node_ids)
                    )
                AnnotationLabel.objects.bulk_create(rows, batch_size=2000)
                job.n_labels += len(annotations)
                job.problems = problems
                job.items_done += n_items
                job.save(
                    update_fields=[
                        "n_imported",
                        "n_duplicate",
                        "n_failed",
                        "n_labels",
                        "problems",
                        "items_done",
                    ]
                )
            logger.info(
                "import %s: chunk %d: %d items read; %d imported, %d duplicate, %d failed so far",
                job.pk, n_chunk, n_items, job.n_imported, job.n_duplicate, job.n_failed,
            )  # fmt: skip
            if stopped:
                break
            if job.n_failed >= max_failures:
                # Stopped only if something is left to read.
                stopped = next(chunks, None) is not None
                break
    if n_failed_unstored and max_failed_clips > 0:  # uploads store none and need no note
        problems.append(
            {
                "item": "(import)",
                "reason": f"{n_failed_unstored} failed file(s) beyond the first {max_failed_clips} "
                "are listed here only, not stored as clips (REFRAIN_IMPORT_MAX_FAILED_CLIPS)",
            }
        )
    if stopped:
        problems.append(
            {
                "item": "(import)",
                "reason": f"stopped after {job.n_failed} failed files (REFRAIN_IMPORT_MAX_FAILURES="
                f"{max_failures}); the rest of {source_name} was not imported",
            }
        )
    job.problems = problems
    job.finished_at = timezone.now()
    job.status = ImportJob.Status.DONE
    job.save(update_fields=["finished_at", "problems", "status"])
    logger.info(
        "import %s into %s: %d imported, %d duplicate, %d failed",
        source_name,
        project.slug,
        job.n_imported,
        job.n_duplicate,
        job.n_failed,
    )


def clips_import_folder(
    *,
    project: Project,
    folder: Path,
    labels_from_folders: bool = False,
    user: AbstractBaseUser | None = None,
    job: ImportJob | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ImportJob:
    items = folder_items(folder, labels_from_folders=labels_from_folders)
    options: dict[str, Any] = {"folder": str(folder), "labels_from_folders": labels_from_folders}
    if chunk_size != CHUNK_SIZE:
        options["chunk_size"] = chunk_size
    return clips_import(
        project=project,
        items=items,
        source_name=str(folder),
        user=user,
        job=job,
        options=options,
        chunk_size=chunk_size,
    )


def clips_import_manifest(
    *,
    project: Project,
    manifest: Path,
    user: AbstractBaseUser | None = None,
    job: ImportJob | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ImportJob:
    items = manifest_items(manifest)
    options: dict[str, Any] = {"manifest": str(manifest)}
    if chunk_size != CHUNK_SIZE:
        options["chunk_size"] = chunk_size
    return clips_import(
        project=project,
        items=items,
        source_name=manifest.name,
        user=user,
        job=job,
        options=options,
        chunk_size=chunk_size,
    )


def bucket_items(
    location: buckets.BucketLocation, *, labels_from_folders: bool = False
) -> Iterator[ImportItem]:
    """Every object under ``location`` in key order, except "folder" markers and hidden names
    (a path part starting with a dot); with ``labels_from_folders`` the key's folder relative to
    the prefix (``Rock/Punk``) is the label.

    Raises
    ------
    ImportSourceError
        When the bucket is missing, denies listing, or there are no credentials.
    """
    prefix = f"{location.prefix}/" if location.prefix else ""
    try:
        for obj in buckets.bucket_objects(location):
            rel = obj.key[len(prefix) :]
            parts = rel.split("/")
            if not rel or rel.endswith("/") or any(part.startswith(".") for part in parts):
                continue
            folder = "/".join(parts[:-1])
            yield ImportItem(
                path=Path(obj.key),
                labels=(folder,) if labels_from_folders and folder else (),
                external_id=rel,
                obj=obj,
            )
    except buckets.BucketUnavailable as exc:
        raise ImportSourceError(str(exc)) from exc


def clips_import_bucket(
    *,
    project: Project,
    uri: str,
    labels_from_folders: bool = False,
    user: AbstractBaseUser | None = None,
    job: ImportJob | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ImportJob:
    """Import every audio object under ``uri`` (``s3://bucket/prefix``) that the project does not
    hold yet. Raises :class:`ImportSourceError` (the job failed with the reason) for a bucket that
    does not exist, denies access, or no credentials, before any clip is written."""
    try:
        location = buckets.bucket_location_parse(uri)
    except Invalid as exc:
        raise ImportSourceError(str(exc)) from exc
    options: dict[str, Any] = {"bucket": location.uri, "labels_from_folders": labels_from_folders}
    if chunk_size != CHUNK_SIZE:
        options["chunk_size"] = chunk_size
    return clips_import(
        project=project,
        items=bucket_items(location, labels_from_folders=labels_from_folders),
        source_name=location.uri,
        user=user,
        job=job,
        options=options,
        chunk_size=chunk_size,
    )


def clips_import_bucket_submit(
    *,
    project: Project,
    uri: str,
    labels_from_folders: bool = False,
    user: AbstractBaseUser | None = None,
) -> ImportJob:
    """Queue a bucket import for a ``cpu`` worker (the clips page): a queued job, sent on commit.

    Raises
    ------
    ImportSourceError
        When ``uri`` is not ``s3://bucket[/prefix]``.
    """
    try:
        location = buckets.bucket_location_parse(uri)
    except Invalid as exc:
        raise ImportSourceError(str(exc)) from exc
    job = ImportJob.objects.create(
        project=project,
        source=location.uri,
        created_by=user,
        status=ImportJob.Status.QUEUED,
        options={"bucket": location.uri, "labels_from_folders": labels_from_folders},
    )
    # The tasks module imports this one: the task is imported where it is sent.
    from annotation.tasks import import_clips

    import_clips.delay_on_commit(project.pk, **import_task_kwargs(job=job))
    return job


def import_job_claim(*, job_id: int) -> ImportJob | None:
    """queued -> running, held by this process (one more attempt); None when the job is not
    queued (another worker claimed it, or it ended): a duplicate message does nothing."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, attempts=F("attempts") + 1, **holder_fields()
    )
    return ImportJob.objects.get(pk=job_id) if claimed else None


def import_job_resumable(*, job: ImportJob) -> bool:
    """Its source can be read again by the import task (a folder, a manifest or a bucket; not an
    upload)."""
    o = job.options
    return bool(o.get("folder") or o.get("manifest") or o.get("bucket"))


def import_job_requeue(*, job: ImportJob, action: str, reason: str) -> bool:
    """running (its worker gone) -> queued again, with a note; False if the row moved meanwhile
    (conditional on the row as the caller saw it). The caller sends the import task again."""
    return bool(
        ImportJob.objects.filter(
            pk=job.pk, status=job.status, worker=job.worker, heartbeat_at=job.heartbeat_at
        ).update(
            status=ImportJob.Status.QUEUED,
            worker="",
            worker_pid=None,
            heartbeat_at=timezone.now(),
            sweep_notes=[*job.sweep_notes, sweep_note(action, reason)],
        )
    )


def import_task_kwargs(*, job: ImportJob) -> dict[str, Any]:
    """The keyword arguments of ``annotation.tasks.import_clips`` that resume ``job``."""
    o = job.options
    kwargs: dict[str, Any] = {"job_id": job.pk}
    if o.get("folder"):
        kwargs |= {"folder": o["folder"], "labels_from_folders": bool(o.get("labels_from_folders"))}
    elif o.get("bucket"):
        kwargs |= {"bucket": o["bucket"], "labels_from_folders": bool(o.get("labels_from_folders"))}
    else:
        kwargs["manifest"] = o["manifest"]
    if o.get("chunk_size"):
        kwargs["chunk_size"] = int(o["chunk_size"])
    return kwargs


def clip_upload(
    *,
    project: Project,
    upload: UploadedFile,
    labels: tuple[str, ...] = (),
    user: AbstractBaseUser | None = None,
) -> tuple[ImportJob, Clip | None]:
    """Store one uploaded file in the media storage and import it like any other file; its visuals
    are left to a ``cpu`` worker (this runs in a web request).

    A rejected upload (too large, wrong type, undecodable, out of limits, already in the project)
    leaves no file and no clip row: only the import job saying why.
    """
    from django.core.files.storage import default_storage

    name = Path(upload.name or "upload").name
    limit = int(settings.REFRAIN_MAX_UPLOAD_BYTES)
    reason = ""
    if Path(name).suffix.lower() not in SUPPORTED_EXTENSIONS:
        reason = f"unsupported file type {Path(name).suffix or '(none)'}"
    elif upload.size is not None and upload.size > limit:
        reason = (
            f"{upload.size} bytes: larger than the {limit} byte limit (REFRAIN_MAX_UPLOAD_BYTES)"
        )
    if reason:
        job = ImportJob.objects.create(project=project, source=f"upload:{name}", created_by=user)
        job.n_failed = 1
        job.problems = [{"item": name, "reason": reason}]
        job.finished_at = timezone.now()
        job.status = ImportJob.Status.DONE
        job.save()
        return job, None
    stored = default_storage.save(f"uploads/{project.slug}/{name}", upload)
    try:
        job = clips_import(
            project=project,
            items=[
                ImportItem(path=Path(stored), labels=labels, external_id=name, media_key=stored)
            ],
            source_name=f"upload:{name}",
            user=user,
            max_failed_clips=0,
            make_visuals=False,
        )
        clip = Clip.objects.filter(
            project=project, storage=Clip.Storage.MEDIA, storage_key=stored
        ).first()
    except BaseException:
        default_storage.delete(stored)
        raise
    if clip is None:  # rejected or a duplicate: the stored copy is not needed
        default_storage.delete(stored)
    else:
        clip_ids = clip_ids_of_upload(clip)
        # The tasks module imports this one: the task is imported where it is sent.
        from annotation.tasks import make_clip_visuals

        delay_on_commit_or_log(make_clip_visuals, clip_ids)
    return job, clip


def clip_ids_of_upload(clip: Clip) -> list[int]:
    """The ready clips an upload made: one, or every segment of a long file cut into segments."""
    return list(
        Clip.objects.filter(
            project_id=clip.project_id,
            storage=clip.storage,
            storage_key=clip.storage_key,
            status=Clip.Status.READY,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
