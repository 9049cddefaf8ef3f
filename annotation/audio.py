"""Reading audio headers and proving a file decodes, without loading it whole.

soundfile (libsndfile 1.2) reads wav, flac, ogg and mp3. It is lenient in ways an import must not be:
a truncated WAV opens with a shorter frame count, and a truncated MP3 opens with its full header length
but decodes nothing at the tail. ``probe_audio`` checks both ends of the stream so a damaged file is
reported as failed, with the reason, instead of entering a project.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

SUPPORTED_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3"})
_TAIL_FRAMES = 4096


class AudioProbeError(Exception):
    """The file is not usable audio; ``reason`` is shown to the user and stored on the clip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioProbe:
    format: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


def sha256_of(fh: BinaryIO, *, chunk: int = 1 << 20) -> tuple[str, int]:
    """Content hash and size of an open binary file, streamed."""
    digest = hashlib.sha256()
    size = 0
    while block := fh.read(chunk):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _riff_declared_data_bytes(fh: BinaryIO) -> int | None:
    """Size of the ``data`` chunk a RIFF/WAVE header declares, or None if not found."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            return int(size)
        fh.seek(size + (size & 1), 1)


def probe_audio(path: str | Path) -> AudioProbe:
    """Read the header of ``path`` and check that its first and last frames decode.

    Raises
    ------
    AudioProbeError
        With a human-readable reason: missing, empty, unsupported, unreadable or truncated.
    """
    p = Path(path)
    if not p.exists():
        raise AudioProbeError("file not found")
    if not p.is_file():
        raise AudioProbeError("not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise AudioProbeError("empty file (0 bytes)")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise AudioProbeError(
            f"unsupported file type {suffix or '(none)'}; expected one of "
            + ", ".join(sorted(SUPPORTED_EXTENSIONS))
        )
    try:
        with sf.SoundFile(str(p)) as f:
            frames, sr, channels, fmt = f.frames, f.samplerate, f.channels, f.format
            subtype = f.subtype
            if sr <= 0 or channels <= 0:
                raise AudioProbeError(f"invalid header: {sr} Hz, {channels} channels")
            if frames <= 0:
                raise AudioProbeError("no audio frames")
            head = f.read(min(frames, _TAIL_FRAMES), dtype="float32")
            if len(head) == 0:
                raise AudioProbeError("first frames do not decode")
            start = max(0, frames - _TAIL_FRAMES)
            f.seek(start)
            tail = f.read(dtype="float32")
            if len(tail) < frames - start:
                raise AudioProbeError(
                    f"truncated: header says {frames} frames, decoding stops before the end"
                )
    except AudioProbeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = str(getattr(exc, "error_string", "") or exc)
        # libsndfile's mp3 reader reports a non-MPEG file as "does not exist"; the file does.
        if "does not exist" in detail or "not a regular file" in detail:
            detail = f"not a valid {suffix.lstrip('.')} stream"
        raise AudioProbeError(f"unreadable audio: {detail}") from exc

    if fmt == "WAV" and subtype and subtype.startswith(("PCM", "FLOAT", "DOUBLE")):
        with p.open("rb") as fh:
            declared = _riff_declared_data_bytes(fh)
        sample_bytes = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4}.get(
            subtype, 8 if subtype == "DOUBLE" else 4
        )
        actual = frames * channels * sample_bytes
        # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never filled in the size.
        if declared not in (None, 0, 0xFFFFFFFF) and declared > actual + sample_bytes * channels:
            raise AudioProbeError(
                f"truncated: header declares {declared} data bytes, file holds {actual}"
            )
    return AudioProbe(
        format=fmt.lower(),
        duration_s=frames / sr,
        sample_rate=int(sr),
        channels=int(channels),
        frames=int(frames),
    )
