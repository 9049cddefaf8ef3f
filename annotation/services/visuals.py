"""Waveform peaks and a spectrogram image for the annotator's player, computed once per clip.

Computed server-side with numpy and soundfile so every browser (headless ones included) shows the
same picture without decoding audio twice. Results are cached under ``MEDIA_ROOT/derived`` by the
clip's content hash: a clip's audio never changes.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from django.conf import settings

from annotation.models import Clip
from annotation.services.clip_files import ClipFileUnavailable, clip_source_file

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


def _read_mono(clip: Clip) -> tuple[np.ndarray, int]:
    # Raises ClipFileUnavailable (an OSError) for failed clips and paths outside the roots.
    with sf.SoundFile(str(clip_source_file(clip))) as f:
        sr = f.samplerate
        start = int((clip.segment_start_s or 0.0) * sr)
        end = int(clip.segment_end_s * sr) if clip.segment_end_s else f.frames
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


def _cache_dir() -> Path:
    path = Path(settings.MEDIA_ROOT) / "derived"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_key(clip: Clip) -> str:
    base = clip.sha256 or f"clip{clip.pk}"
    return f"{base}-{clip.segment_start_s or 0:g}-{clip.segment_end_s or 0:g}"


def clip_visuals(clip: Clip) -> tuple[dict[str, Any], Path]:
    """``({"duration_s", "peaks"}, spectrogram_png_path)``, computed on first use and cached."""
    if clip.status == Clip.Status.FAILED:  # cached before it was failed: still nothing to show
        raise ClipFileUnavailable(f"clip {clip.pk} failed at import: it has no audio")
    key = _cache_key(clip)
    json_path = _cache_dir() / f"{key}.json"
    png_path = _cache_dir() / f"{key}.png"
    if json_path.exists() and png_path.exists():
        return json.loads(json_path.read_text()), png_path
    y, sr = _read_mono(clip)
    data = {"duration_s": len(y) / sr, "peaks": waveform_peaks(y)}
    unique = f"{os.getpid()}.{threading.get_ident()}.tmp"
    tmp_png = png_path.with_suffix(f".png.{unique}")
    tmp_png.write_bytes(png_bytes(spectrogram_rgb(y, sr)))
    tmp_png.replace(png_path)
    tmp_json = json_path.with_suffix(f".json.{unique}")
    tmp_json.write_text(json.dumps(data))
    tmp_json.replace(json_path)
    return data, png_path
