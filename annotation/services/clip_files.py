"""Where a clip's audio may come from and what is served for it.

One rule for every reader: a path counts only once it is resolved (``realpath``: ``..`` and symlinks
followed) and lies inside a configured import root or MEDIA_ROOT. Imports reject anything else;
serving (``/clips/<id>/audio``, Label Studio links, spectrograms) and feature extraction go through
:func:`clip_served_file` / :func:`clip_source_file`, which refuse failed clips, missing files and
paths outside the roots.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from annotation.models import Clip


class ClipSourceError(ValueError):
    """A path that must not be imported; ``reason`` goes into the import's problems."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClipFileUnavailable(FileNotFoundError):
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
    if clip.status == Clip.Status.FAILED:
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")
    for candidate in (clip.source_path, getattr(clip, "served_path", "")):
        real = path_resolve_in_roots(candidate) if candidate else None
        if real is not None and real.is_file():
            return real
    raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")


def clip_served_file(*, clip: Clip, original: bool = False) -> Path:
    """The file to send for ``clip``: never for a failed clip, never a missing file, never a path
    outside the roots. ``original`` (admins only: the caller decides) is the imported file as is.

    Raises
    ------
    ClipFileUnavailable
    """
    if clip.status == Clip.Status.FAILED:
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")
    real = path_resolve_in_roots(clip.source_path) if clip.source_path else None
    if real is None or not real.is_file():
        raise ClipFileUnavailable(f"clip {clip.pk}: the audio file is missing")
    return real


def clip_download_name(*, clip: Clip, path: Path) -> str:
    """A neutral file name (``clip-144.ogg``): never the original name, which may name the genre."""
    ext = path.suffix.lower() if path.suffix.lower() in _NEUTRAL_EXTENSIONS else ""
    return f"clip-{clip.pk}{ext}"


_NEUTRAL_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".opus"})
