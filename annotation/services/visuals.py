"""Waveform peaks and a spectrogram image for the annotator's player, computed once per clip.

Computed with numpy and soundfile so every browser (headless ones included) shows the same picture
without decoding audio twice; stored in the media storage under ``derived/`` by the clip's content
hash (a clip's audio never changes). They are made on a ``cpu`` worker: by the import, from the
file it has just probed, or by :func:`clip_visuals_make` (the ``make_clip_visuals`` task) for clips
that have none. A web request only reads them (:func:`clip_visuals_stored`), never decodes audio.
"""

from __future__ import annotations

import itertools
import json
import logging
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from django.core.cache import cache

from annotation.models import Clip
from annotation.services.audio_source import clip_audio_open
from annotation.services.clip_files import ClipFileUnavailable
from annotation.services.media import media_exists, media_put_file, media_read_bytes
from refrain.jobs import delay_on_commit_or_log

logger = logging.getLogger(__name__)

N_PEAKS = 1200
SPEC_WIDTH = 1000
SPEC_HEIGHT = 160
MAX_SECONDS = 600  # longer files are drawn from their first ten minutes

# A perceptually ordered dark-to-bright map (close to "magma"), interpolated between anchors.
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [28, 16, 68],
        [79, 18, 123],
        [129, 37, 129],
        [181, 54, 122],
        [229, 80, 100],
        [251, 135, 97],
        [254, 194, 135],
        [252, 253, 191],
    ],
    dtype=np.float64,
)


def _colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8."""
    pos = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    frac = (pos - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[hi] * frac).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG (no imaging library needed)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _read_mono(path: Path, *, start_s: float | None, end_s: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        start = int((start_s or 0.0) * sr)
        end = int(end_s * sr) if end_s else f.frames
        end = min(end, start + MAX_SECONDS * sr, f.frames)
        f.seek(start)
        y = f.read(max(end - start, 0), dtype="float32", always_2d=True)
    return y.mean(axis=1), sr


def waveform_peaks(y: np.ndarray, *, n: int = N_PEAKS) -> list[float]:
    """(n,) max |amplitude| per bin, scaled so the loudest bin is 1."""
    if len(y) == 0:
        return [0.0] * n
    edges = np.linspace(0, len(y), n + 1).astype(int)
    absy = np.abs(y)
    peaks = np.array([absy[a:b].max() if b > a else 0.0 for a, b in itertools.pairwise(edges)])
    top = peaks.max() or 1.0
    return [round(float(p), 4) for p in peaks / top]


def spectrogram_rgb(
    y: np.ndarray, sr: int, *, width: int = SPEC_WIDTH, height: int = SPEC_HEIGHT
) -> np.ndarray:
    """(height, width, 3) log-frequency power spectrogram, low frequencies at the bottom."""
    n_fft = 2048
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    starts = np.linspace(0, len(y) - n_fft, width).astype(int)
    frames = np.stack([y[s : s + n_fft] for s in starts]) * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (width, n_fft/2+1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = np.geomspace(30.0, sr / 2, height + 1)
    rows = np.empty((height, width))
    for i in range(height):
        band = (freqs >= edges[i]) & (freqs < edges[i + 1])
        if band.any():
            rows[i] = power[:, band].mean(axis=1)
        else:  # narrower than one FFT bin: take the nearest bin
            rows[i] = power[:, int(np.argmin(np.abs(freqs - edges[i])))]
    db = 10 * np.log10(rows + 1e-12)
    db = (db - (db.max() - 80.0)) / 80.0
    return _colormap(db[::-1])


def visuals_key(*, sha256: str | None, start_s: float | None, end_s: float | None) -> str:
    """The media key stem of a clip's visuals (``derived/<sha256>-<start>-<end>``)."""
    return f"derived/{sha256}-{start_s or 0:g}-{end_s or 0:g}"


def _clip_key(clip: Clip) -> str:
    return visuals_key(
        sha256=clip.sha256 or f"clip{clip.pk}",
        start_s=clip.segment_start_s,
        end_s=clip.segment_end_s,
    )


def visuals_make_from_file(
    path: Path, *, key: str, start_s: float | None = None, end_s: float | None = None
) -> dict[str, Any]:
    """Compute the visuals of ``path`` (a window of it for a segment) and store them as ``key``
    (``.png`` first, then ``.json``: the JSON's presence says both are there)."""
    y, sr = _read_mono(path, start_s=start_s, end_s=end_s)
    data = {"duration_s": len(y) / sr, "peaks": waveform_peaks(y)}
    with tempfile.TemporaryDirectory(prefix="refrain-visuals-") as tmpdir:
        png = Path(tmpdir) / "spectrogram.png"
        png.write_bytes(png_bytes(spectrogram_rgb(y, sr)))
        media_put_file(key=f"{key}.png", source=png, content_type="image/png")
        doc = Path(tmpdir) / "visual.json"
        doc.write_text(json.dumps(data))
        media_put_file(key=f"{key}.json", source=doc, content_type="application/json")
    return data


def clip_visuals_make(clip: Clip) -> dict[str, Any]:
    """Make (or find) ``clip``'s visuals, reading its audio through :func:`clip_audio_open`. For
    a worker, never a web request.

    Raises
    ------
    ClipFileUnavailable
        For a failed clip or one whose audio cannot be read.
    """
    if clip.status == Clip.Status.FAILED:
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")
    key = _clip_key(clip)
    stored = clip_visuals_stored(clip)
    if stored is not None:
        return stored
    path = clip_audio_open(clip)
    try:
        return visuals_make_from_file(
            path, key=key, start_s=clip.segment_start_s, end_s=clip.segment_end_s
        )
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise ClipFileUnavailable(f"clip {clip.pk}: cannot decode the audio: {exc}") from exc


def clip_visuals_stored(clip: Clip) -> dict[str, Any] | None:
    """``{"duration_s", "peaks"}`` if ``clip``'s visuals were made; else None (nothing computed)."""
    if clip.status == Clip.Status.FAILED:
        return None
    raw = media_read_bytes(f"{_clip_key(clip)}.json")
    return json.loads(raw) if raw is not None else None


def clip_spectrogram_key(clip: Clip) -> str | None:
    """The media key of ``clip``'s spectrogram PNG, if it was made; else None."""
    if clip.status == Clip.Status.FAILED:
        return None
    key = f"{_clip_key(clip)}.png"
    return key if media_exists(key) else None


def clips_visuals_make(*, clip_ids: list[int]) -> dict[str, int]:
    """Make the visuals of the ready clips among ``clip_ids`` that have none (the ``cpu`` task);
    a clip whose audio cannot be read is counted and logged, not raised."""
    made = failed = 0
    for clip in Clip.objects.filter(pk__in=clip_ids, status=Clip.Status.READY).order_by("pk"):
        try:
            clip_visuals_make(clip)
            made += 1
        except ClipFileUnavailable as exc:
            logger.warning("clip %s: no visuals: %s", clip.pk, exc)
            failed += 1
    return {"made": made, "failed": failed}


def clip_visuals_request(clip: Clip) -> None:
    """Ask a ``cpu`` worker for ``clip``'s visuals (at most once a minute per clip)."""
    if cache.add(f"refrain:visuals-queued:{clip.pk}", 1, timeout=60):
        # The tasks module imports this one: the task is imported where it is sent.
        from annotation.tasks import make_clip_visuals

        delay_on_commit_or_log(make_clip_visuals, [clip.pk])
