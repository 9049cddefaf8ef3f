"""Artifacts behind Django's ``STORAGES["artifacts"]``: feature sets, model files, the musicnn weights.

Rows store *keys* relative to that storage (``project_3/features/fs_12.npy``,
``project_3/model_4``), never absolute paths, so a web node, a ``cpu`` worker and a ``gpu`` worker
on three machines find the same artifact. The storage is configured by environment
(``REFRAIN_ARTIFACT_STORAGE``, see settings): a local folder (``ARTIFACT_ROOT``, the embedded
default) or an S3-compatible bucket and prefix (django-storages' ``S3Storage``).

* **Writes** are atomic and idempotent. Keys are deterministic (one per feature set, chunk or model
  version), a write overwrites its key: a re-run task writes the same object again, never a second
  one. On the local folder a write goes to a temp file renamed over the key
  (:class:`LocalArtifactStorage`); an S3 PUT is atomic by itself (the object appears whole or not).
* **Reads** that need a local file (``np.load`` with ``mmap``, ``joblib``, the musicnn checkpoints)
  go through :func:`artifact_local_path`: the file itself on the local folder; otherwise a copy in
  ``REFRAIN_CACHE_DIR`` (downloaded atomically, kept least-recently-used within
  ``REFRAIN_CACHE_MAX_BYTES``). The cache is only a cache: delete it, or the whole working
  directory, and the next read downloads again. Artifacts are immutable once written, so a cached
  copy is never stale.
* **Failures** of the storage (a bucket that does not exist or denies access, missing credentials)
  raise :class:`ArtifactStorageError` with a reason a person can act on (the error code, the
  operation and the key, never a credential); jobs store it as their failure reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages

from refrain.errors import Unavailable

ARTIFACTS = "artifacts"
MUSICNN_PREFIX = "models/musicnn"


class ArtifactStorageError(Unavailable, OSError):
    """The artifact storage refused or failed an operation; the message says which and why."""

    code = "artifact_storage"


# --------------------------------------------------------------------------------------------------
# The local backend
# --------------------------------------------------------------------------------------------------


class LocalArtifactStorage(FileSystemStorage):
    """``ARTIFACT_ROOT`` as a storage: writes are temp file + rename and overwrite their key.

    The folder is read from settings at each use (unless ``location`` is given), so a process or a
    test that points ``ARTIFACT_ROOT`` elsewhere needs no new storage instance.
    """

    @property  # type: ignore[override]
    def base_location(self) -> str:
        return str(self._location if self._location is not None else settings.ARTIFACT_ROOT)

    @property  # type: ignore[override]
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name  # overwrite: one object per key, whatever the number of writes

    def _save(self, name: str, content: File) -> str:
        full = Path(self.path(name))
        full.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=f".{full.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in content.chunks():
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, self.file_permissions_mode or 0o644)
            os.replace(tmp, full)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(name).replace("\\", "/")


# --------------------------------------------------------------------------------------------------
# Access with clear errors
# --------------------------------------------------------------------------------------------------


def artifact_storage() -> Storage:
    return storages[ARTIFACTS]


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (``AccessDenied``, ``NoSuchKey``, ``404``), or ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def storage_error_reason(exc: BaseException) -> str:
    """A short, credential-free reason for a storage exception (the S3 error code when there is one)."""
    if s3_error_code(exc):
        code = s3_error_code(exc)
        names = {
            "AccessDenied": "access denied",
            "403": "access denied",
            "InvalidAccessKeyId": "unknown access key",
            "SignatureDoesNotMatch": "wrong secret key",
            "NoSuchBucket": "no such bucket",
            "404": "not found",
        }
        return f"{names.get(str(code), str(code))} ({code})"
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no credentials configured (NoCredentialsError)"
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionError"}:
        return f"storage endpoint unreachable ({name})"
    return name


def _where(storage: Storage) -> str:
    bucket = getattr(storage, "bucket_name", None)
    return f"bucket {bucket!r}" if bucket else "the artifact folder"


@contextlib.contextmanager
def _failing_as(op: str, key: str, storage: Storage) -> Iterator[None]:
    try:
        yield
    except ArtifactStorageError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:
        if s3_error_code(exc) in NOT_FOUND_CODES:
            raise FileNotFoundError(key) from exc
        raise ArtifactStorageError(
            f"artifact storage: {op} {key!r} in {_where(storage)} failed: "
            f"{storage_error_reason(exc)}"
        ) from exc


def artifact_write(key: str, data: bytes | File) -> str:
    """Write (or overwrite) ``key``; returns the key. Atomic on both backends."""
    storage = artifact_storage()
    content = ContentFile(data) if isinstance(data, bytes) else data
    with _failing_as("writing", key, storage):
        name = storage.save(key, content)
    if name != key:  # a storage that renames would make a second object per re-run
        raise ArtifactStorageError(
            f"artifact storage stored {key!r} as {name!r}: it must overwrite"
        )
    return key


def artifact_write_file(key: str, path: Path) -> str:
    with path.open("rb") as fh:
        return artifact_write(key, File(fh, name=path.name))


def artifact_read(key: str) -> bytes:
    """The bytes of ``key`` (small files: sidecars, plans); FileNotFoundError when it is absent."""
    storage = artifact_storage()
    with _failing_as("reading", key, storage), storage.open(key, "rb") as fh:
        data: bytes = fh.read()
    return data


def artifact_exists(key: str) -> bool:
    storage = artifact_storage()
    with _failing_as("looking up", key, storage):
        return bool(storage.exists(key))


def artifact_names(folder: str) -> list[str]:
    """File names directly inside ``folder`` (empty when there is none)."""
    storage = artifact_storage()
    with _failing_as("listing", folder, storage):
        try:
            return list(storage.listdir(folder)[1])
        except FileNotFoundError:
            return []


def artifact_keys(prefix: str = "") -> list[str]:
    """Every key below ``prefix``, recursively (for tests, the seed command and the benchmark)."""
    storage = artifact_storage()
    out: list[str] = []

    def walk(folder: str) -> None:
        dirs, files = storage.listdir(folder)
        base = f"{folder.rstrip('/')}/" if folder else ""
        out.extend(f"{base}{f}" for f in files)
        for d in dirs:
            walk(f"{base}{d}")

    with _failing_as("listing", prefix, storage), contextlib.suppress(FileNotFoundError):
        walk(prefix)
    return sorted(out)


def artifact_delete_folder(folder: str) -> None:
    storage = artifact_storage()
    with _failing_as("deleting", folder, storage):
        for name in artifact_names(folder):
            storage.delete(f"{folder}/{name}")
        if isinstance(storage, FileSystemStorage):
            with contextlib.suppress(OSError):
                Path(storage.path(folder)).rmdir()


# --------------------------------------------------------------------------------------------------
# Local copies: the file itself, or a bounded LRU cache
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(settings.REFRAIN_CACHE_DIR)


def _storage_identity(storage: Storage) -> str:
    parts = [
        type(storage).__name__,
        str(getattr(storage, "endpoint_url", "") or ""),
        str(getattr(storage, "bucket_name", "") or ""),
        str(getattr(storage, "location", "") or ""),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _local_file(storage: Storage, key: str) -> Path | None:
    """The key's own file when the storage is a local folder, else None."""
    try:
        return Path(storage.path(key))
    except NotImplementedError:
        return None


def artifact_local_path(key: str) -> Path:
    """A local file with the bytes of ``key`` (to memory-map or open by path).

    The storage's own file when it is a local folder; else a cached copy, downloaded on a miss.
    Raises FileNotFoundError when the key does not exist, ArtifactStorageError when the storage
    fails.
    """
    storage = artifact_storage()
    own = _local_file(storage, key)
    if own is not None:
        if not own.is_file():
            raise FileNotFoundError(key)
        return own
    target = cache_dir() / _storage_identity(storage) / key
    if target.is_file():
        with contextlib.suppress(OSError):
            os.utime(target)  # most recently used
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            _failing_as("reading", key, storage),
            storage.open(key, "rb") as src,
        ):
            while block := src.read(1 << 20):
                out.write(block)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    cache_evict(keep=target)
    return target


def cache_evict(*, keep: Path | None = None, max_bytes: int | None = None) -> int:
    """Delete least-recently-used cached files until the cache fits ``REFRAIN_CACHE_MAX_BYTES``.

    Returns the bytes freed. ``keep`` (the file just downloaded) is never deleted. One process
    evicts at a time (a lock file); a file another process has memory-mapped stays readable by it
    after the unlink.
    """
    root = cache_dir()
    limit = int(settings.REFRAIN_CACHE_MAX_BYTES if max_bytes is None else max_bytes)
    if not root.is_dir():
        return 0
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        files: list[tuple[float, int, Path]] = []
        for dirpath, _, names in os.walk(root):
            for n in names:
                if n == ".lock" or n.endswith(".part"):
                    continue
                p = Path(dirpath) / n
                with contextlib.suppress(OSError):
                    st = p.stat()
                    files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        freed = 0
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total - freed <= limit:
                break
            if keep is not None and p == keep:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                freed += size
        return freed


# --------------------------------------------------------------------------------------------------
# FeatureStore over the storage (active_learning.core.features.Blobs)
# --------------------------------------------------------------------------------------------------


class StorageBlobs:
    """:class:`~active_learning.core.features.Blobs` over the artifacts storage."""

    def read(self, key: str) -> bytes:
        return artifact_read(key)

    def write(self, key: str, data: bytes) -> None:
        artifact_write(key, data)

    def exists(self, key: str) -> bool:
        return artifact_exists(key)

    def names(self, folder: str) -> list[str]:
        return artifact_names(folder)

    def delete_folder(self, folder: str) -> None:
        artifact_delete_folder(folder)

    def local_path(self, key: str) -> Path:
        return artifact_local_path(key)


# --------------------------------------------------------------------------------------------------
# The musicnn weights
# --------------------------------------------------------------------------------------------------


def musicnn_install_dir() -> Path:
    """Where ``make install`` fetches the checkpoints (``MUSICNN_WEIGHTS_DIR``, else var/models/musicnn)."""
    explicit = os.environ.get("MUSICNN_WEIGHTS_DIR", "") or str(
        getattr(settings, "MUSICNN_WEIGHTS_DIR", "") or ""
    )
    return Path(explicit) if explicit else Path(settings.BASE_DIR) / "var" / "models" / "musicnn"


def musicnn_seed(*, source: Path | None = None) -> list[str]:
    """Upload the installed checkpoints to ``models/musicnn/`` of the artifacts storage; the keys.

    Idempotent: a key already there with the same size is left alone.
    """
    src = source or musicnn_install_dir()
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(
            f"{src}: no musicnn checkpoints; run "
            "`python -m active_learning.core.musicnn.fetch --dest var/models/musicnn` first"
        )
    storage = artifact_storage()
    keys = []
    for p in files:
        key = f"{MUSICNN_PREFIX}/{p.relative_to(src).as_posix()}"
        with _failing_as("sizing", key, storage):
            same = storage.exists(key) and storage.size(key) == p.stat().st_size
        if not same:
            artifact_write_file(key, p)
        keys.append(key)
    return keys


def musicnn_weights_local() -> Path | None:
    """A local folder with the checkpoints read from the artifacts storage (cached), or None when
    the storage has none."""
    keys = artifact_keys(MUSICNN_PREFIX)
    if not keys:
        return None
    paths = [artifact_local_path(k) for k in keys]
    # Every key maps to <folder>/<key>: the folder holding models/musicnn is the weights folder.
    first, key = paths[0], keys[0]
    depth = len(Path(key).relative_to(MUSICNN_PREFIX).parts)
    return first.parents[depth - 1]
