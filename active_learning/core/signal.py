"""Signal helpers shared by the feature backends and the CNN: resampling and CQT patches.

numpy, soxr and librosa only (no torch), so a feature worker that never trains a CNN does not
load torch to compute a patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def resample(audio: npt.ArrayLike, sr: int, target: int) -> F32:
    """Resample a mono signal with soxr (high quality); a no-op when rates agree.

    Parameters
    ----------
    audio : (samples,) array-like
    sr, target : int
        Source and target sample rates in Hz.

    Returns
    -------
    (round(samples * target / sr),) float32
    """
    x = np.asarray(audio, dtype=np.float32)
    if sr == target:
        return x
    import soxr

    return np.asarray(soxr.resample(x, sr, target, quality="HQ"), dtype=np.float32)


def fit_frames(m: npt.NDArray[Any], frames: int) -> npt.NDArray[Any]:
    """(F, T) -> (F, frames): centre crop when longer, edge-pad at the end when shorter."""
    t = m.shape[1]
    if t >= frames:
        s = (t - frames) // 2
        return m[:, s : s + frames]
    return np.pad(m, ((0, 0), (0, frames - t)), mode="edge")


def cqt_patches(
    clips: list[tuple[npt.NDArray[Any], int]],
    *,
    sr: int = 22050,
    hop_length: int = 1024,
    fmin: float = 65.40639132514966,
    n_bins: int = 72,
    frames: int = 216,
) -> npt.NDArray[np.float32]:
    """Clips ``[(audio, sr_i), ...]`` -> (N, n_bins, frames) float32 log-magnitude CQT patches (dB).

    One bin per semitone from ``fmin`` (C2 by default, six octaves), each clip normalised to its
    own peak and floored at -80 dB. A transposition is a shift along the bin axis, which is what
    ``LogMelCNN(freq_shift=...)`` augments; the CNN itself does not care which time-frequency
    representation it is given.
    """
    import librosa

    out = np.empty((len(clips), n_bins, frames), dtype=np.float32)
    for i, (audio, rate) in enumerate(clips):
        y = resample(audio, rate, sr)
        c = np.abs(
            librosa.cqt(
                y, sr=sr, hop_length=hop_length, fmin=fmin, n_bins=n_bins, bins_per_octave=12
            )
        )
        m = librosa.amplitude_to_db(c, ref=np.max, top_db=80.0).astype(np.float32)
        out[i] = fit_frames(m, frames)
    return out
