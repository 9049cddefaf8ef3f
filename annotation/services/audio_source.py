"""A clip's audio, wherever it is stored: the one way workers read it and browsers are sent it.

- Workers decode :func:`clip_audio_open` (a local path): a local clip's file in its import root;
  a clip in a bucket or in a bucket media storage is streamed once into a bounded
  least-recently-used cache (``REFRAIN_AUDIO_CACHE_DIR``, at most ``REFRAIN_AUDIO_CACHE_BYTES``), so
  no worker assumes another process's disk.
- Browsers get :func:`clip_served_audio`: a local file (sent by Refrain or by the proxy with
  ``X-Accel-Redirect``) or a short-lived presigned URL of the tag-free copy in the media bucket,
  named by its content hash; the caller has checked who may hear the clip.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from annotation.audio import AudioProbeError, probe_audio
from annotation.models import Clip
from annotation.services import buckets
from annotation.services.clip_files import (
    ClipFileUnavailable,
    audio_content_type,
    clip_download_name,
    clip_require_ready,
    path_resolve_in_roots,
    served_copy_make,
    sha256_of_path,
)
from annotation.services.media import (
    media_exists,
    media_is_local,
    media_local_path,
    media_presigned_url,
    media_read_into,
)

# A file this recent is never evicted: another thread of this worker may be about to open it.
_CACHE_GRACE_S = 60.0


def _cache_dir() -> Path:
    path = Path(settings.REFRAIN_AUDIO_CACHE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_trim(*, keep: Path) -> None:
    """Delete the least recently used downloads until the cache fits REFRAIN_AUDIO_CACHE_BYTES."""
    limit = int(settings.REFRAIN_AUDIO_CACHE_BYTES)
    entries: list[tuple[float, int, Path]] = []
    total = 0
    for root, _dirs, files in os.walk(_cache_dir()):
        for name in files:
            path = Path(root) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            total += st.st_size
            if not name.startswith("."):
                entries.append((st.st_mtime, st.st_size, path))
    if total <= limit:
        return
    now = time.time()
    for mtime, size, path in sorted(entries):
        if total <= limit:
            break
        if path == keep or now - mtime < _CACHE_GRACE_S:
            continue
        path.unlink(missing_ok=True)
        total -= size


def cached_fetch(*, source: str, suffix: str, fetch: Callable[[Path], None]) -> Path:
    """The local copy of ``source`` (a stable name such as ``s3://bucket/key``) in the audio cache,
    downloaded by ``fetch(path)`` when missing; a hit counts as a use (its mtime is refreshed).

    Raises whatever ``fetch`` raises; a failed download leaves nothing in the cache.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()
    folder = _cache_dir() / digest[:2]
    dst = folder / f"{digest}{suffix.lower()[:10]}"
    if dst.is_file():
        try:
            os.utime(dst)
            return dst
        except FileNotFoundError:
            pass  # evicted between the check and the touch: download again
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{digest}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        fetch(tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    _cache_trim(keep=dst)
    return dst


def object_open(obj: buckets.BucketObject | tuple[str, str]) -> Path:
    """A local copy of a bucket object, through the cache.

    Raises
    ------
    buckets.ObjectMissing, buckets.BucketUnavailable
    """
    bucket, key = (obj.bucket, obj.key) if isinstance(obj, buckets.BucketObject) else obj

    def fetch(path: Path) -> None:
        with path.open("wb") as fh:
            buckets.object_read_into(bucket=bucket, key=key, out=fh)

    return cached_fetch(source=f"s3://{bucket}/{key}", suffix=Path(key).suffix, fetch=fetch)


def media_open(key: str) -> Path:
    """A local file of the media key ``key``: itself under MEDIA_ROOT, else a cached download.

    Raises
    ------
    buckets.ObjectMissing, buckets.BucketUnavailable
    """
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise buckets.ObjectMissing(f"media:{key}: not a key of the media storage")
    local = media_local_path(key)
    if local is not None:
        return local
    if media_is_local():
        raise buckets.ObjectMissing(f"media:{key}: not in MEDIA_ROOT")
    return cached_fetch(
        source=f"media:{key}",
        suffix=Path(key).suffix,
        fetch=lambda path: media_read_into(key=key, out_path=path),
    )


def _split_s3(key: str) -> tuple[str, str]:
    bucket, _, object_key = key.partition("/")
    return bucket, object_key


def _original_open(clip: Clip) -> Path:
    """The clip's own file (not the served copy), locally. Raises ClipFileUnavailable."""
    key = clip.storage_key
    if not key:
        raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")
    if clip.storage == Clip.Storage.LOCAL:
        real = path_resolve_in_roots(key)
        if real is None or not real.is_file():
            raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")
        return real
    try:
        if clip.storage == Clip.Storage.MEDIA:
            return media_open(key)
        return object_open(_split_s3(key))
    except (buckets.ObjectMissing, buckets.BucketUnavailable) as exc:
        raise ClipFileUnavailable(f"clip {clip.pk}: {exc}") from exc


def clip_audio_open(clip: Clip) -> Path:
    """A local file to decode for ``clip``: its original, else its served copy. Never for a failed
    clip, never a path outside the import roots; bucket audio is streamed into the cache.

    Raises
    ------
    ClipFileUnavailable
    """
    clip_require_ready(clip)
    try:
        return _original_open(clip)
    except ClipFileUnavailable:
        if not clip.served_key:
            raise
        try:
            return media_open(clip.served_key)
        except (buckets.ObjectMissing, buckets.BucketUnavailable):
            pass
        raise


def clip_audio_available(clip: Clip) -> bool:
    """Cheap check that ``clip`` has audio to read (no download): for a local file, that it is in
    the roots and exists; for keys, that they are recorded."""
    if clip.status == Clip.Status.FAILED or not clip.storage_key:
        return False
    if clip.storage == Clip.Storage.LOCAL:
        real = path_resolve_in_roots(clip.storage_key)
        if real is not None and real.is_file():
            return True
        return bool(clip.served_key) and media_exists(clip.served_key)
    return True


@dataclass(frozen=True)
class ServedAudio:
    """What a browser is sent for a clip: a local ``path`` or a presigned ``url`` (one of them);
    ``name`` is the file name whose suffix gives the type (a key or a path)."""

    name: str
    path: Path | None = None
    url: str | None = None


def clip_served_copy(clip: Clip) -> str:
    """``clip``'s served copy key, made now (and recorded) for clips imported before copies
    existed or whose copy went missing.

    Raises
    ------
    ClipFileUnavailable
    """
    clip_require_ready(clip)
    if clip.served_key and media_exists(clip.served_key):
        return clip.served_key
    source = _original_open(clip)
    try:
        sha = clip.sha256 or sha256_of_path(source)
        fmt = clip.format or probe_audio(source).format
        key = served_copy_make(source=source, sha256=sha, fmt=fmt)
    except AudioProbeError as exc:
        raise ClipFileUnavailable(f"clip {clip.pk}: {exc.reason}") from exc
    Clip.objects.filter(pk=clip.pk).update(served_key=key)
    clip.served_key = key
    return key


def clip_served_audio(*, clip: Clip, original: bool = False) -> ServedAudio:
    """What to send for ``clip``: its tag-free copy, or with ``original`` (admins only: the caller
    decides) the imported file as it is. A bucket answers with a presigned URL, named neutrally.

    Raises
    ------
    ClipFileUnavailable
    """
    clip_require_ready(clip)
    if original:
        if clip.storage == Clip.Storage.S3:
            bucket, key = _split_s3(clip.storage_key)
            return ServedAudio(
                name=key,
                url=buckets.object_presigned_url(
                    bucket=bucket,
                    key=key,
                    content_type=audio_content_type(Path(key).suffix),
                    download_name=clip_download_name(clip=clip, path=key),
                ),
            )
        if clip.storage == Clip.Storage.LOCAL or media_is_local():
            path = _original_open(clip)
            return ServedAudio(name=str(path), path=path)
        return _media_served(clip, clip.storage_key)
    key = clip_served_copy(clip)
    if media_is_local():
        local = media_local_path(key)
        if local is None:
            raise ClipFileUnavailable(f"clip {clip.pk}: the served copy is missing")
        return ServedAudio(name=key, path=local)
    return _media_served(clip, key)


def _media_served(clip: Clip, key: str) -> ServedAudio:
    return ServedAudio(
        name=key,
        url=media_presigned_url(
            key=key,
            content_type=audio_content_type(Path(key).suffix),
            download_name=clip_download_name(clip=clip, path=key),
        ),
    )
