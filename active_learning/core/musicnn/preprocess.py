"""musicnn 0.1.0 preprocessing: 16 kHz audio -> log-compressed mel patches.

This reproduces ``musicnn.extractor.batch_data`` (musicnn 0.1.0 under librosa 0.11)::

    audio, sr = librosa.load(file, sr=16000)          # soxr_hq resampling
    P = librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, n_fft=512, n_mels=96).T
    logmel = np.log10(10000 * P.astype(np.float16) + 1)   # numpy 1.x: the product is float32
    patches = [logmel[i:i + 187] for i in range(0, len(logmel) - 187 + 1, 187)]

with one deliberate NumPy-2 fix: under NEP 50 ``10000 * float16_array`` stays float16 and
overflows to ``inf`` for P > 6.55, so the float16-rounded power is cast back to float32 before the
multiplication (what NumPy 1.x did implicitly).

Two mel front ends compute the same numbers:

* :func:`mel_power_librosa` calls librosa (the reference path);
* :class:`TorchMel` is a torch STFT + the same librosa filterbank (the fast path). It pads with
  zeros (``pad_mode='constant'``, the librosa >= 0.10 default; ``torch.stft``'s default
  ``'reflect'`` would change frame 0).

Short clips (fewer than 187 mel frames, i.e. under ~2.98 s at 16 kHz) are a case musicnn cannot
handle (``batch_data`` raises). :func:`make_patches` tiles such a log-mel along time until one
patch is full -- the "repeat-pad" that musicnn's own training configuration (``pad_short``) used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
import torch

__all__ = [
    "FFT_HOP",
    "FFT_SIZE",
    "N_MELS",
    "PATCH_FRAMES",
    "SR",
    "TorchMel",
    "log_compress",
    "logmel_librosa",
    "make_patches",
    "mel_filterbank",
    "mel_power_librosa",
    "n_mel_frames",
    "resample_to_16k",
]

SR = 16000
FFT_SIZE = 512
FFT_HOP = 256
N_MELS = 96
# librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
PATCH_FRAMES = 187


def resample_to_16k(audio: npt.NDArray[Any], sr: int) -> npt.NDArray[np.float32]:
    """Mono float32 audio at ``sr`` -> float32 at 16 kHz, as ``librosa.load(sr=16000)`` does.

    Parameters
    ----------
    audio
        (S,) mono samples.
    sr
        Sample rate of ``audio`` in Hz.

    Returns
    -------
    np.ndarray
        (S',) float32, S' = ceil(S * 16000 / sr). Unchanged (no copy) when ``sr == 16000``.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (S,), got {audio.shape}")
    audio = audio.astype(np.float32, copy=False)
    if sr == SR:
        return audio
    # librosa.load's default res_type is "soxr_hq".
    return np.asarray(soxr.resample(audio, sr, SR, quality="HQ"), dtype=np.float32)


def n_mel_frames(n_samples: int) -> int:
    """Number of STFT frames for ``n_samples`` (``center=True``): 1 + S // 256."""
    return 1 + n_samples // FFT_HOP


def mel_filterbank() -> npt.NDArray[np.float32]:
    """(96, 257) float32 Slaney-scale, Slaney-normalised filterbank (librosa defaults)."""
    import librosa

    return np.asarray(
        librosa.filters.mel(sr=SR, n_fft=FFT_SIZE, n_mels=N_MELS, dtype=np.float32),
        dtype=np.float32,
    )


def mel_power_librosa(audio_16k: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """librosa mel power spectrogram exactly as musicnn computes it.

    Parameters
    ----------
    audio_16k
        (S,) float32 mono audio at 16 kHz.

    Returns
    -------
    np.ndarray
        (T, 96) float32 mel power, T = 1 + S // 256 (time x mel, as musicnn transposes it).
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio_16k, dtype=np.float32),
        sr=SR,
        hop_length=FFT_HOP,
        n_fft=FFT_SIZE,
        n_mels=N_MELS,
    )
    return np.ascontiguousarray(mel.T, dtype=np.float32)


def log_compress(mel_power: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """musicnn's "logC": ``log10(10000 * float32(float16(P)) + 1)`` in float32.

    Parameters
    ----------
    mel_power
        (..., 96) mel power.

    Returns
    -------
    np.ndarray
        Same shape, float32.
    """
    p16 = np.asarray(mel_power).astype(np.float16).astype(np.float32)
    out: npt.NDArray[np.float32] = np.log10(np.float32(10000) * p16 + np.float32(1)).astype(
        np.float32, copy=False
    )
    return out


def logmel_librosa(audio_16k: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """(T, 96) float32 log-mel of 16 kHz audio via librosa (the reference path)."""
    return log_compress(mel_power_librosa(audio_16k))


def make_patches(
    logmel: npt.NDArray[Any], *, patch_frames: int = PATCH_FRAMES
) -> npt.NDArray[np.float32]:
    """Cut a log-mel into musicnn's non-overlapping patches.

    Patches start at frames 0, 187, 374, ...; trailing frames that do not fill a patch are
    dropped, as musicnn does. A log-mel shorter than one patch is tiled along time to fill one
    patch (repeat-pad; musicnn itself fails on such input).

    Parameters
    ----------
    logmel
        (T, 96) log-mel, T >= 1.

    Returns
    -------
    np.ndarray
        (n_patches, 187, 96) float32, n_patches = max(1, T // 187).
    """
    logmel = np.asarray(logmel, dtype=np.float32)
    t = logmel.shape[0]
    if t == 0:
        raise ValueError("empty log-mel: the clip has no samples")
    if t < patch_frames:
        reps = -(-patch_frames // t)
        return np.tile(logmel, (reps, 1))[None, :patch_frames].copy()
    n = t // patch_frames
    return np.ascontiguousarray(
        logmel[: n * patch_frames].reshape(n, patch_frames, logmel.shape[1])
    )


class TorchMel:
    """Fast log-mel matching :func:`logmel_librosa` (float16 rounding included).

    Like librosa, the STFT of Hann-windowed (periodic), zero-padded (``center=True``,
    ``pad_mode='constant'``) frames is computed in float64 and stored as complex64, and the power
    ``|X|**2`` is float32 (numpy's ``abs``, as librosa). The filterbank product is done in float64
    and rounded once. Why this care: the float16 rounding turns any relative error above ~1e-7 in
    the mel power into occasional one-ulp float16 flips (up to 4e-4 in a log-mel bin). A float32
    FFT (error relative to the frame energy) flipped ~100 bins per 10 s clip and moved
    ``max_pool`` by up to 2e-3; a float32 filterbank product in a different summation order than
    numpy's still flipped ~5. This version flips none on the reference signals.
    """

    def __init__(self) -> None:
        self.window = torch.hann_window(FFT_SIZE, periodic=True, dtype=torch.float64)
        self.fbank_t = torch.from_numpy(mel_filterbank().T.astype(np.float64))  # (257, 96)

    def mel_power(self, audio_16k: npt.NDArray[Any] | torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz audio -> (T, 96) float32 mel power, T = 1 + S // 256."""
        y = torch.as_tensor(audio_16k, dtype=torch.float32).double()
        spec = torch.stft(
            y,
            n_fft=FFT_SIZE,
            hop_length=FFT_HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        ).to(torch.complex64)  # (257, T)
        power = np.abs(spec.numpy().T) ** 2  # (T, 257) float32
        return (torch.from_numpy(power).double() @ self.fbank_t).float()

    def __call__(self, audio_16k: npt.NDArray[Any] | torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz audio -> (T, 96) float32 log-mel (musicnn's logC with float16 rounding)."""
        p16 = self.mel_power(audio_16k).to(torch.float16).to(torch.float32)
        return torch.log10(p16 * 10000.0 + 1.0)
