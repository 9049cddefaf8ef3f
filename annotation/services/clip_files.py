"""Where a clip's audio may come from and what is served for it.

One rule for every reader: a path counts only once it is resolved (``realpath``: ``..`` and symlinks
followed) and lies inside a configured import root or MEDIA_ROOT. Imports reject anything else;
serving (``/clips/<id>/audio``, Label Studio links, spectrograms) and feature extraction go through
:func:`clip_served_file` / :func:`clip_source_file`, which refuse failed clips, missing files and
paths outside the roots.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from django.conf import settings

from annotation.audio import (
    SERVED_EXTENSIONS,
    AudioProbe,
    AudioProbeError,
    audio_strip_tags,
    probe_audio,
    sha256_of,
)
from annotation.models import Clip
from refrain.errors import Invalid, NotFound


class ClipSourceError(Invalid, ValueError):
    """A path that must not be imported; ``reason`` goes into the import's problems."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClipFileUnavailable(NotFound, FileNotFoundError):
    """Nothing may be served or read for this clip (failed, missing, outside the roots)."""


def import_roots() -> tuple[Path, ...]:
    """The configured import roots and MEDIA_ROOT, resolved (read at call time, so tests may
    override the setting)."""
    raw = [*getattr(settings, "REFRAIN_IMPORT_ROOTS", []), settings.MEDIA_ROOT]
    return tuple(Path(os.path.realpath(str(r))) for r in raw if str(r).strip())


def path_resolve_in_roots(path: str | os.PathLike[str]) -> Path | None:
    """``path`` resolved, if it lies inside an import root or MEDIA_ROOT; else None."""
    if not str(path):
        return None
    real = Path(os.path.realpath(path))
    for root in import_roots():
        if real == root or real.is_relative_to(root):
            return real
    return None


def source_confine(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved and checked for containment in the roots.

    Raises
    ------
    ClipSourceError
        When the resolved path lies outside every root; the reason names neither the target of a
        symlink nor anything about the file.
    """
    real = path_resolve_in_roots(path)
    if real is None:
        raise ClipSourceError(
            "outside the import roots (REFRAIN_IMPORT_ROOTS and MEDIA_ROOT): not imported"
        )
    return real


def clip_source_file(clip: Clip) -> Path:
    """The file to decode for ``clip`` (its original, else its served copy): never a failed clip,
    never a path outside the roots.

    Raises
    ------
    ClipFileUnavailable
    """
    _require_ready(clip)
    for candidate in (clip.source_path, getattr(clip, "served_path", "")):
        real = path_resolve_in_roots(candidate) if candidate else None
        if real is not None and real.is_file():
            return real
    raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")


def served_copy_make(
    *, source: Path, sha256: str, fmt: str, original: AudioProbe | None = None
) -> Path:
    """The tag-free copy of ``source`` under ``MEDIA_ROOT/served/``, named by content hash (shared
    by clips with the same bytes), made if missing and checked to decode to the same length.

    Raises
    ------
    AudioProbeError
        When the copy cannot be made or does not decode like the original.
    """
    ext = SERVED_EXTENSIONS.get(fmt, source.suffix.lower() or ".audio")
    folder = Path(settings.MEDIA_ROOT) / "served" / sha256[:2]
    dst = folder / f"{sha256}{ext}"
    if dst.is_file():
        return dst
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{sha256}.{os.getpid()}.{threading.get_ident()}{ext}"
    try:
        audio_strip_tags(source, tmp, fmt=fmt)
        original = original or probe_audio(source)
        copy = probe_audio(tmp)
        if (copy.frames, copy.channels, copy.sample_rate) != (
            original.frames,
            original.channels,
            original.sample_rate,
        ):
            raise AudioProbeError(
                f"the tag-free copy decodes to {copy.frames} frames, the original to "
                f"{original.frames}"
            )
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _require_ready(clip: Clip) -> None:
    if clip.status == Clip.Status.FAILED:
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")


def clip_served_copy_on_disk(clip: Clip) -> Path | None:
    """``clip``'s recorded served copy, if it exists inside the roots; else None."""
    real = path_resolve_in_roots(clip.served_path) if clip.served_path else None
    return real if real is not None and real.is_file() else None


def clip_served_copy(clip: Clip) -> Path:
    """``clip``'s served copy, made now (and recorded) for clips imported before copies existed.

    Raises
    ------
    ClipFileUnavailable
    """
    _require_ready(clip)
    existing = clip_served_copy_on_disk(clip)
    if existing is not None:
        return existing
    source = clip_source_original(clip)
    try:
        sha = clip.sha256 or sha256_of_path(source)
        dst = served_copy_make(source=source, sha256=sha, fmt=clip.format or _fmt_of(source))
    except AudioProbeError as exc:
        raise ClipFileUnavailable(f"clip {clip.pk}: {exc.reason}") from exc
    Clip.objects.filter(pk=clip.pk).update(served_path=str(dst))
    clip.served_path = str(dst)
    return dst


def clip_source_original(clip: Clip) -> Path:
    """The imported file itself: not for a failed clip, not missing, not outside the roots.

    Raises
    ------
    ClipFileUnavailable
    """
    _require_ready(clip)
    real = path_resolve_in_roots(clip.source_path) if clip.source_path else None
    if real is None or not real.is_file():
        raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")
    return real


def clip_served_file(*, clip: Clip, original: bool = False) -> Path:
    """The file to send for ``clip``: its tag-free copy, or with ``original`` (admins only: the
    caller decides) the imported file as is. Never for a failed clip, never a missing file, never a
    path outside the roots.

    Raises
    ------
    ClipFileUnavailable
    """
    return clip_source_original(clip) if original else clip_served_copy(clip)


def _fmt_of(path: Path) -> str:
    try:
        return probe_audio(path).format
    except AudioProbeError as exc:
        raise ClipFileUnavailable(f"{path.name}: {exc.reason}") from exc


def sha256_of_path(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_of(fh)[0]


def clip_download_name(*, clip: Clip, path: Path) -> str:
    """A neutral file name (``clip-144.ogg``): never the original name, which may name the genre."""
    ext = path.suffix.lower() if path.suffix.lower() in _NEUTRAL_EXTENSIONS else ""
    return f"clip-{clip.pk}{ext}"


_AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
}
_NEUTRAL_EXTENSIONS = frozenset(_AUDIO_TYPES)  # an extension that names nothing but the format


def served_audio_headers(*, clip: Clip, path: Path) -> dict[str, str]:
    """Headers of every audio response (the app's player and Label Studio's): the type from the
    served file, a neutral name, no content sniffing."""
    return {
        "Content-Type": _AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        "Content-Disposition": f'inline; filename="{clip_download_name(clip=clip, path=path)}"',
        "X-Content-Type-Options": "nosniff",
    }
