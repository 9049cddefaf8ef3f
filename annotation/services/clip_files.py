"""Where a clip's local audio may come from, the tag-free served copy, and how audio is named.

One rule for every local file: a path counts only once it is resolved (``realpath``: ``..`` and
symlinks followed) and lies inside a configured import root or MEDIA_ROOT. Imports reject anything
else; readers go through :mod:`annotation.services.audio_source` (``clip_audio_open`` for workers,
``clip_served_audio`` for browsers), which refuses failed clips, missing files and paths outside
the roots. Clips in a bucket or in the media storage are named by keys, never by paths.
"""

from __future__ import annotations

import os
import tempfile
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
from annotation.services.media import media_exists, media_put_file
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


def served_copy_key(*, sha256: str, fmt: str, suffix: str = "") -> str:
    """The media key of the tag-free copy of the file with content hash ``sha256``: named by the
    hash and the format only (blind mode: nothing of the original name or its tags)."""
    ext = SERVED_EXTENSIONS.get(fmt, suffix.lower() or ".audio")
    return f"served/{sha256[:2]}/{sha256}{ext}"


def served_copy_make(
    *, source: Path, sha256: str, fmt: str, original: AudioProbe | None = None
) -> str:
    """The media key of the tag-free copy of the local file ``source`` (shared by clips with the
    same bytes), made if missing and checked to decode to the same length before it is stored.

    Raises
    ------
    AudioProbeError
        When the copy cannot be made or does not decode like the original.
    """
    key = served_copy_key(sha256=sha256, fmt=fmt, suffix=source.suffix)
    if media_exists(key):
        return key
    ext = Path(key).suffix
    with tempfile.TemporaryDirectory(prefix="refrain-served-") as tmpdir:
        tmp = Path(tmpdir) / f"{sha256}{ext}"
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
        media_put_file(key=key, source=tmp, content_type=audio_content_type(ext))
    return key


def clip_require_ready(clip: Clip) -> None:
    """Raises :class:`ClipFileUnavailable` for a clip that failed at import (it has no audio)."""
    if clip.status == Clip.Status.FAILED:
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")


def sha256_of_path(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_of(fh)[0]


def clip_download_name(*, clip: Clip, path: Path | str) -> str:
    """A neutral file name (``clip-144.ogg``): never the original name, which may name the genre."""
    suffix = Path(path).suffix.lower()
    ext = suffix if suffix in _NEUTRAL_EXTENSIONS else ""
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


def audio_content_type(suffix: str) -> str:
    return _AUDIO_TYPES.get(suffix.lower(), "application/octet-stream")


def served_audio_headers(*, clip: Clip, path: Path | str) -> dict[str, str]:
    """Headers of every audio response (the app's player and Label Studio's): the type from the
    served file, a neutral name, no content sniffing."""
    return {
        "Content-Type": audio_content_type(Path(path).suffix),
        "Content-Disposition": f'inline; filename="{clip_download_name(clip=clip, path=path)}"',
        "X-Content-Type-Options": "nosniff",
    }
