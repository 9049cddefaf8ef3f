"""Synthetic, genre-dependent demo audio: made here, so the demo needs no download.

Each leaf genre has its own tempo range, scale, timbre and drum pattern, so that audio features
carry real (if simple) signal about the label, and siblings sound alike more than cousins do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SR = 22050


@dataclass(frozen=True)
class Style:
    bpm: tuple[float, float]
    root_hz: tuple[float, float]
    scale: tuple[int, ...]  # semitone steps
    wave: str  # sine | saw | square | pluck | pad
    drums: str  # none | four | backbeat | swing | brush
    distortion: float = 0.0
    notes_per_beat: int = 1


MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
PENTA = (0, 2, 4, 7, 9)
BLUES = (0, 3, 5, 6, 7, 10)

STYLES: dict[str, Style] = {
    "Electronic/House": Style((120, 126), (110, 140), MINOR, "saw", "four", notes_per_beat=2),
    "Electronic/Techno": Style((128, 138), (55, 70), MINOR, "square", "four", notes_per_beat=4),
    "Electronic/Ambient": Style((60, 80), (200, 300), MAJOR, "pad", "none"),
    "Rock/Punk": Style((160, 190), (82, 110), MAJOR, "saw", "backbeat", 0.8, 2),
    "Rock/Metal": Style((100, 140), (41, 55), MINOR, "saw", "backbeat", 0.95, 4),
    "Jazz/Swing": Style((140, 180), (130, 175), BLUES, "sine", "swing", notes_per_beat=2),
    "Jazz/Bebop": Style((200, 260), (175, 230), BLUES, "square", "brush", notes_per_beat=4),
    "Classical/Baroque": Style((90, 110), (260, 330), MAJOR, "pluck", "none", notes_per_beat=4),
    "Classical/Romantic": Style((60, 80), (130, 200), MINOR, "sine", "none", notes_per_beat=1),
    "Folk/Celtic": Style((110, 130), (290, 350), DORIAN, "pluck", "none", notes_per_beat=3),
    "Folk/Blues": Style((70, 90), (82, 110), BLUES, "pluck", "backbeat", 0.2, 1),
}


def _osc(wave: str, freq: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    phase = 2 * np.pi * freq * t
    if wave == "sine":
        return np.sin(phase) + 0.2 * np.sin(2 * phase)
    if wave == "saw":
        return 2 * ((freq * t) % 1.0) - 1
    if wave == "square":
        return np.sign(np.sin(phase)) * 0.7
    if wave == "pluck":
        return np.sin(phase) * np.exp(-6 * t) + 0.3 * np.sin(3 * phase) * np.exp(-9 * t)
    # pad: detuned sines with a slow swell
    swell = np.minimum(1.0, t * 2)
    return swell * (np.sin(phase) + np.sin(phase * 1.005) + 0.5 * np.sin(phase * 2.01)) / 2.5


def _drum(kind: str, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "kick":
        return np.sin(2 * np.pi * 60 * t * np.exp(-8 * t)) * np.exp(-10 * t)
    rng = np.random.default_rng(n)
    noise = rng.standard_normal(n)
    if kind == "snare":
        return noise * np.exp(-25 * t) * 0.6
    return noise * np.exp(-60 * t) * 0.25  # hat / brush


def render(style_key: str, *, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 audio in [-1, 1] for one clip of the given leaf style."""
    s = STYLES[style_key]
    n = int(seconds * SR)
    y = np.zeros(n, dtype=np.float64)
    bpm = rng.uniform(*s.bpm)
    beat = 60.0 / bpm
    root = rng.uniform(*s.root_hz)
    step = beat / s.notes_per_beat
    n_notes = int(seconds / step) + 1
    degrees = np.cumsum(rng.integers(-2, 3, size=n_notes)) % len(s.scale)
    for i in range(n_notes):
        start = int(i * step * SR)
        if start >= n:
            break
        length = min(int(step * SR * 0.95), n - start)
        t = np.arange(length) / SR
        semis = s.scale[int(degrees[i])] + 12 * int(rng.random() < 0.15)
        freq = root * 2 ** (semis / 12)
        env = np.minimum(1.0, t * 200) * np.exp(-t * (1.5 / step))
        y[start : start + length] += 0.35 * env * _osc(s.wave, freq, t, rng)
    if s.drums != "none":
        for b in range(int(seconds / beat) + 1):
            pos = int(b * beat * SR)
            if pos >= n:
                break
            parts: list[tuple[str, float]] = []
            if s.drums == "four":
                parts = [("kick", 0.0), ("hat", 0.5)]
            elif s.drums == "backbeat":
                parts = [("kick" if b % 2 == 0 else "snare", 0.0), ("hat", 0.5)]
            elif s.drums == "swing":
                parts = [("hat", 0.0), ("hat", 0.66)] + ([("kick", 0.0)] if b % 4 == 0 else [])
            elif s.drums == "brush":
                parts = [("brush", 0.0), ("brush", 0.33), ("brush", 0.66)]
            for kind, offset in parts:
                p = pos + int(offset * beat * SR)
                length = min(int(0.25 * SR), n - p)
                if length > 0:
                    y[p : p + length] += 0.5 * _drum("hat" if kind == "brush" else kind, length)
    if s.distortion:
        y = np.tanh(y * (1 + 10 * s.distortion)) * 0.6
    y += rng.standard_normal(n) * 0.003
    peak = float(np.max(np.abs(y))) or 1.0
    return (0.8 * y / peak).astype(np.float32)
