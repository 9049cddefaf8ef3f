"""The media storage (``STORAGES["default"]``): uploads, served copies and derived visuals by key.

Either MEDIA_ROOT on this machine (the embedded default) or the media bucket
(``REFRAIN_MEDIA_STORAGE=s3``). Keys are relative (``served/ab/<sha256>.ogg``); callers never build a
path themselves. Writes are atomic in both: a local file is written beside its key and renamed into
place, an object is one PUT, so a reader sees the whole file or nothing.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, Storage, storages
from storages.utils import clean_name

from annotation.services import buckets


def media_storage() -> Storage:
    return storages["default"]


def media_is_local() -> bool:
    """True when the media storage is a folder on this machine (MEDIA_ROOT)."""
    return isinstance(media_storage(), FileSystemStorage)


def media_local_path(key: str) -> Path | None:
    """The file of ``key`` under MEDIA_ROOT (symlinks resolved and still inside it), if the media
    storage is local and the file exists; else None."""
    storage = media_storage()
    if not isinstance(storage, FileSystemStorage) or not key:
        return None
    try:
        path = Path(os.path.realpath(storage.path(key)))
    except SuspiciousFileOperation:
        return None
    root = Path(os.path.realpath(str(storage.location)))
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def media_bucket_key(key: str) -> tuple[str, str]:
    """The bucket and full object key of ``key`` in a bucket media storage (its prefix added)."""
    storage = media_storage()
    full = storage._normalize_name(clean_name(key))
    return str(storage.bucket_name), full


def media_exists(key: str) -> bool:
    if media_is_local():
        return media_local_path(key) is not None
    return bool(media_storage().exists(key))


def media_put_file(*, key: str, source: Path, content_type: str = "") -> None:
    """Store the local file ``source`` as ``key``, replacing what was there."""
    storage = media_storage()
    if isinstance(storage, FileSystemStorage):
        dst = Path(storage.path(key))
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            shutil.copyfile(source, tmp)
            tmp.replace(dst)
        finally:
            tmp.unlink(missing_ok=True)
        return
    bucket, full = media_bucket_key(key)
    buckets.object_put_file(bucket=bucket, key=full, path=str(source), content_type=content_type)


def media_read_bytes(key: str) -> bytes | None:
    """The stored bytes of a small file (a visual's JSON), or None when it is not there."""
    storage = media_storage()
    if isinstance(storage, FileSystemStorage):
        path = media_local_path(key)
        return path.read_bytes() if path is not None else None
    bucket, full = media_bucket_key(key)
    out = io.BytesIO()
    try:
        buckets.object_read_into(bucket=bucket, key=full, out=out)
    except buckets.ObjectMissing:
        return None
    return out.getvalue()


def media_read_into(*, key: str, out_path: Path) -> None:
    """Copy ``key`` into the local file ``out_path`` (streamed).

    Raises
    ------
    buckets.ObjectMissing, buckets.BucketUnavailable
    """
    local = media_local_path(key)
    if local is not None:
        shutil.copyfile(local, out_path)
        return
    if media_is_local():
        raise buckets.ObjectMissing(f"media:{key}: not in MEDIA_ROOT")
    bucket, full = media_bucket_key(key)
    with out_path.open("wb") as fh:
        buckets.object_read_into(bucket=bucket, key=full, out=fh)


def media_presigned_url(*, key: str, content_type: str = "", download_name: str = "") -> str:
    """A short-lived GET link to ``key`` in the media bucket (not for a local media storage)."""
    bucket, full = media_bucket_key(key)
    return buckets.object_presigned_url(
        bucket=bucket, key=full, content_type=content_type, download_name=download_name
    )
