"""LogMelCNN on tiny data, on CPU: contract, consistency, learns an easy task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from active_learning.core.cnn import LogMelCNN, logmel_patches

PARENTS = np.array([-1, -1, 0, 0], dtype=np.int64)  # A, B, A/low, A/high


def _clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tones: B = noise, A/low = 300 Hz tone, A/high = 3 kHz tone (0.5 s at 8 kHz)."""
    rng = np.random.default_rng(seed)
    sr = 8000
    t = np.arange(sr // 2) / sr
    audio, labels = [], []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            y, lab = rng.normal(0, 0.1, t.size), [0, 1, 0, 0]
        else:
            f = 300.0 if kind == 1 else 3000.0
            y = 0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) + rng.normal(0, 0.01, t.size)
            lab = [1, 0, 1, 0] if kind == 1 else [1, 0, 0, 1]
        audio.append(y.astype(np.float32))
        labels.append(lab)
    return np.stack(audio), np.asarray(labels, dtype=np.int8)


def _cnn(**kw: object) -> LogMelCNN:
    params: dict[str, object] = {
        "sr": 8000,
        "n_mels": 32,
        "channels": (8, 16),
        "crop_frames": 6,
        "batch_size": 16,
        "min_steps": 60,
        "max_steps": 60,
        "device": "cpu",
    }
    params.update(kw)
    return LogMelCNN(PARENTS, **params)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["conditional", "flat"])
def test_cnn_learns_from_audio(method: str) -> None:
    x, y = _clips(48, 0)
    xt, yt = _clips(24, 1)
    clf = _cnn(method=method).fit(x, y)
    p = clf.predict_proba(xt)
    assert p.shape == (24, 4) and np.all((p >= 0) & (p <= 1))
    assert np.all(p[:, 2:] <= p[:, [0]] + 1e-9)
    pred = np.argmax(np.c_[p[:, 1], p[:, 2], p[:, 3]], axis=1)
    truth = np.argmax(np.c_[yt[:, 1], yt[:, 2], yt[:, 3]], axis=1)
    assert np.mean(pred == truth) > 0.8  # chance 1/3


def test_cnn_on_logmel_patches_and_contract() -> None:
    x, y = _clips(12, 0)
    patches = logmel_patches([(a, 8000) for a in x], sr=8000, n_mels=32, frames=8)
    assert patches.shape == (12, 32, 8)
    clf = _cnn(min_steps=5, max_steps=5)
    with pytest.raises(NotFittedError):
        clf.predict_proba(patches)
    assert clf.fit(patches, y) is clf
    assert clf.predict_proba(patches).shape == (12, 4)


def test_freq_shift_moves_rows_without_wrapping() -> None:
    from active_learning.core.cnn import _shift_rows

    x = torch.arange(6, dtype=torch.float32)[None, :, None].repeat(64, 1, 3)  # rows 0..5
    out = _shift_rows(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for row in out[:, :, 0]:
        d = int(row[3] - x[0, 3, 0])  # an inner row moves by exactly -shift
        shifts.add(-d)
        expected = (torch.arange(6) + d).clamp(0, 5).float()
        assert torch.equal(row, expected)  # edges repeat, nothing wraps around
    assert shifts == {-2, -1, 0, 1, 2}


def test_cqt_patches_shape_and_transposition() -> None:
    from active_learning.core.signal import cqt_patches

    sr = 22050
    t = np.arange(sr) / sr
    a4 = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    b4 = np.sin(2 * np.pi * 440.0 * 2 ** (2 / 12) * t).astype(np.float32)
    p = cqt_patches([(a4, sr), (b4, sr)], frames=16)
    assert p.shape == (2, 72, 16) and p.max() <= 0.0 and p.min() >= -80.0
    peak = p.mean(axis=2).argmax(axis=1)
    assert peak[0] == 33  # A4 is 33 semitones above C2
    assert peak[1] - peak[0] == 2  # two semitones up = two bins up
