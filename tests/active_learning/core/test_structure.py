"""StructureStatsBackend on synthetic signals: key / tempo invariance, meter, shape, silence."""

from __future__ import annotations

import numpy as np
import pytest

from active_learning.core.features import EmbeddingBackend, available_backends, get_backend
from active_learning.core.structure import StructureStatsBackend

SR = 22050

# (MIDI pitch, duration in beats): a major-key tune and a different, minor-ish, leapier one.
TUNE_A = [
    (62, 1),
    (64, 0.5),
    (66, 0.5),
    (67, 1),
    (69, 1),
    (71, 0.5),
    (69, 0.5),
    (67, 1),
    (66, 1),
] * 3
TUNE_B = [(57, 1.5), (64, 0.5), (60, 1), (69, 1), (63, 0.5), (56, 1.5), (60, 1), (67, 1)] * 3


def _render(
    tune: list[tuple[int, float]], *, transpose: int = 0, beat_s: float = 0.4, seconds: float = 10.0
) -> np.ndarray:
    """Harmonic tones with a plucked envelope, looped to ``seconds``."""
    out = np.zeros(int(SR * seconds), dtype=np.float64)
    t0 = 0.0
    i = 0
    while t0 < seconds:
        midi, beats = tune[i % len(tune)]
        dur = beats * beat_s
        n = int(dur * SR)
        start = int(t0 * SR)
        t = np.arange(n) / SR
        f = 440.0 * 2 ** ((midi + transpose - 69) / 12)
        tone = sum(0.6**h * np.sin(2 * np.pi * f * (h + 1) * t) for h in range(4))
        seg = tone * np.exp(-3.0 * t / max(dur, 1e-3))
        stop = min(start + n, out.size)
        out[start:stop] += seg[: stop - start]
        t0 += dur
        i += 1
    return (0.2 * out / np.abs(out).max()).astype(np.float32)


def _clicks(period_s: float, accent_every: int, seconds: float = 10.0) -> np.ndarray:
    y = np.zeros(int(SR * seconds), dtype=np.float32)
    rng = np.random.default_rng(0)
    burst = rng.standard_normal(int(0.02 * SR)) * np.exp(-np.arange(int(0.02 * SR)) / 60.0)
    k = 0
    t = 0.0
    while t < seconds - 0.05:
        s = int(t * SR)
        amp = 1.0 if k % accent_every == 0 else 0.25
        y[s : s + burst.size] += (amp * burst).astype(np.float32)
        k += 1
        t += period_s
    return y


@pytest.fixture(scope="module")
def backend() -> StructureStatsBackend:
    return StructureStatsBackend()


def _blocks(b: StructureStatsBackend, f: np.ndarray, names: list[str]) -> np.ndarray:
    return np.concatenate([f[b.blocks[n]] for n in names])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_registered_and_protocol(backend: StructureStatsBackend) -> None:
    assert "structure-stats" in available_backends()
    b = get_backend("structure-stats")
    assert isinstance(b, EmbeddingBackend)
    assert b.name == "structure-stats" and b.version == "1"
    assert b.dim == backend.dim == 447
    assert sum(s.stop - s.start for s in backend.blocks.values()) == backend.dim


def test_dim_dtype_and_embed_many(backend: StructureStatsBackend) -> None:
    y = _render(TUNE_A)
    f = backend.embed(y, SR)
    assert f.shape == (backend.dim,) and f.dtype == np.float32
    assert np.all(np.isfinite(f))
    many = backend.embed_many([(y, SR), (_render(TUNE_B), SR)])
    assert many.shape == (2, backend.dim) and many.dtype == np.float32
    np.testing.assert_allclose(many[0], f, rtol=1e-5, atol=1e-6)
    assert backend.embed_many([]).shape == (0, backend.dim)
    # Another sample rate is resampled to 22.05 kHz.
    assert backend.embed(_render(TUNE_A)[::2].copy(), SR // 2).shape == (backend.dim,)


@pytest.mark.parametrize("y", [np.zeros(10 * SR), np.zeros(100), np.full(SR, 1e-12)])
def test_silence_and_short_input_are_finite(backend: StructureStatsBackend, y: np.ndarray) -> None:
    f = backend.embed(y.astype(np.float32), SR)
    assert f.shape == (backend.dim,)
    assert np.all(np.isfinite(f))


KEY_BLOCKS = ["pcp_tonic", "pcp_sorted", "pcp_dft", "pc_interval", "mel_interval", "ftm2d"]


@pytest.mark.parametrize("shift", [2, -3])
def test_transposition_invariance(backend: StructureStatsBackend, shift: int) -> None:
    a = backend.embed(_render(TUNE_A), SR)
    a_up = backend.embed(_render(TUNE_A, transpose=shift), SR)
    other = backend.embed(_render(TUNE_B), SR)
    fa, fu, fo = (_blocks(backend, f, KEY_BLOCKS) for f in (a, a_up, other))
    assert _corr(fa, fu) > 0.95
    assert np.linalg.norm(fa - fu) < 0.5 * np.linalg.norm(fa - fo)
    # Tonic-relative profile and the interval histogram are essentially unchanged.
    for name in ("pcp_tonic", "mel_interval", "pc_interval"):
        assert _corr(a[backend.blocks[name]], a_up[backend.blocks[name]]) > 0.9, name


TEMPO_BLOCKS = ["acf_beat", "acf_ratio", "ioi_beat", "ioi_ratio", "meter"]


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_tempo_invariance(backend: StructureStatsBackend, factor: float) -> None:
    a = backend.embed(_render(TUNE_A, beat_s=0.4), SR)
    fast = backend.embed(_render(TUNE_A, beat_s=0.4 * factor), SR)
    other = backend.embed(_render(TUNE_B, beat_s=0.4), SR)
    fa, ff, fo = (_blocks(backend, f, TEMPO_BLOCKS) for f in (a, fast, other))
    assert np.linalg.norm(fa - ff) < np.linalg.norm(fa - fo)
    # The pitch side does not care about tempo at all.
    fa, ff = (_blocks(backend, f, ["pcp_tonic", "mel_interval"]) for f in (a, fast))
    assert _corr(fa, ff) > 0.95
    # Beat period tracks the tempo up to the usual octave ambiguity: log2 ratio ~ log2(factor) + k.
    d = fast[backend.blocks["tempo"]][0] - a[backend.blocks["tempo"]][0] - np.log2(factor)
    assert abs(d - np.round(d)) < 0.1


def test_meter_triple_vs_duple(backend: StructureStatsBackend) -> None:
    meter = backend.blocks["meter"]
    for period in (0.33, 0.4, 0.5):
        triple = backend.embed(_clicks(period, 3), SR)[meter]
        duple = backend.embed(_clicks(period, 4), SR)[meter]
        # log acf(2T)/acf(3T): triple bars favour 3 beats, duple bars 2 (and 4) beats.
        assert triple[0] < duple[0] - 0.1, (period, triple, duple)
        assert triple[1] < duple[1] - 0.1, (period, triple, duple)
