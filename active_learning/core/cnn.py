"""A small CNN on log-mel patches, trained end-to-end with the hierarchical head of ``models``.

Same contract as :class:`~active_learning.core.models.HierarchicalClassifier`: ``fit(X, Y)`` then
``predict_proba(X) -> (N, K)`` hierarchy-consistent. ``X`` is either

* log-mel patches, a float array of shape (N, n_mels, T) (for example from :func:`logmel_patches`), or
* raw mono audio at ``sr``, a float array of shape (N, samples) (clips of equal length); the log-mel
  is then computed in torch on the training device.

Training takes random crops of ``crop_frames`` frames (time-shift augmentation); prediction runs on
the whole patch (the network ends in global mean+max pooling, so any length works). On a GPU worker
the whole loop runs on CUDA; on CPU it is meant for tests and small data.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from active_learning.core.models import (
    _GroupedHead,
    auto_device,
    hierarchical_loss,
    pack_targets,
    single_label_sibling_groups,
    train_loop,
)
from active_learning.core.signal import fit_frames, resample
from taxonomy.hierarchy import Hierarchy

__all__ = ["LogMelCNN", "TorchLogMel", "logmel_patches"]


class TorchLogMel(torch.nn.Module):
    """(B, samples) waveform -> (B, n_mels, T) log-mel (Hann STFT, Slaney mel filters from librosa)."""

    def __init__(
        self, *, sr: int = 22050, n_fft: int = 1024, hop_length: int = 512, n_mels: int = 64
    ) -> None:
        super().__init__()
        import librosa

        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32)
        self.register_buffer("fb", torch.from_numpy(fb))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.n_fft = n_fft
        self.hop_length = hop_length

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        window = typing.cast(torch.Tensor, self.window)
        fb = typing.cast(torch.Tensor, self.fb)
        spec = torch.stft(
            y,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=True,
            return_complex=True,
        )
        power = spec.real**2 + spec.imag**2
        return torch.log(torch.matmul(fb, power) + 1e-6)


def logmel_patches(
    clips: list[tuple[npt.NDArray[Any], int]],
    *,
    sr: int = 22050,
    n_mels: int = 64,
    frames: int = 256,
) -> npt.NDArray[np.float32]:
    """Clips ``[(audio, sr_i), ...]`` -> (N, n_mels, frames) float32 log-mel patches.

    Each clip is resampled to ``sr`` and its log-mel cropped (centre) or edge-padded to ``frames``.
    """
    mel = TorchLogMel(sr=sr, n_mels=n_mels)
    out = np.empty((len(clips), n_mels, frames), dtype=np.float32)
    with torch.inference_mode():
        for i, (audio, rate) in enumerate(clips):
            y = torch.from_numpy(resample(audio, rate, sr))
            out[i] = fit_frames(mel(y[None])[0].numpy(), frames)
    return out


def _shift_rows(xb: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each (F, T) patch of ``xb`` by its own random number of rows in [-max_shift, max_shift].

    Rows shifted in from outside repeat the edge row (no wrap-around: the top of a spectrum must not
    reappear at the bottom).
    """
    b, f = xb.shape[0], xb.shape[1]
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=gen).to(xb.device)
    rows = (torch.arange(f, device=xb.device)[None, :] - shifts).clamp_(0, f - 1)  # (B, F)
    return torch.gather(xb, 1, rows[:, :, None].expand(b, f, xb.shape[2]))


class _Net(torch.nn.Module):
    def __init__(self, n_mels: int, k: int, channels: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [
                torch.nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False),
                torch.nn.BatchNorm2d(c),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
            c_in = c
        self.body = torch.nn.Sequential(*layers)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(2 * c_in, k)
        self.n_mels = n_mels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x[:, None])  # (B, C, F', T')
        pooled = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)
        return self.out(self.drop(pooled))  # type: ignore[no-any-return]


class LogMelCNN(BaseEstimator):  # type: ignore[misc]
    """Hierarchical multi-label CNN on log-mel patches (or raw audio).

    Parameters
    ----------
    parents : (K,) array-like of int
    method : {"conditional", "flat"}
        As in :class:`~active_learning.core.models.HierarchicalClassifier`.
    input : {"auto", "logmel", "audio"}
        ``"auto"``: 3-d X is log-mel (N, n_mels, T), 2-d X is audio (N, samples) at ``sr``.
    sr, n_mels : int
        Audio rate and mel bands when X is audio (n_mels must match X when X is log-mel).
    channels : tuple of int
        Conv block widths (3x3 conv, BN, ReLU, 2x2 max-pool each).
    crop_frames : int
        Training crop length in frames (0 = no cropping).
    freq_shift : int
        Training augmentation: shift each patch by up to this many frequency rows either way
        (a transposition, for CQT patches with one bin per semitone; 0 = off).
    time_stretch : float
        Training augmentation: stretch each batch along time by a random factor in
        [1 - time_stretch, 1 + time_stretch] (a tempo change; 0 = off), before cropping.
    dropout, lr, weight_decay, batch_size, max_epochs, min_steps, max_steps, device, seed
        Training, as in ``HierarchicalClassifier``.

    Attributes
    ----------
    module_ : torch.nn.Module (on CPU after fit)
    band_mean_, band_std_ : (n_mels,) float32
        Per-band normalisation from the training patches.
    hierarchy_ : Hierarchy
    loss_curve_ : list of float
    """

    def __init__(
        self,
        parents: npt.ArrayLike,
        *,
        method: Literal["conditional", "flat"] = "conditional",
        input: Literal["auto", "logmel", "audio"] = "auto",
        sr: int = 22050,
        n_mels: int = 64,
        channels: tuple[int, ...] = (16, 32, 64, 64),
        crop_frames: int = 128,
        freq_shift: int = 0,
        time_stretch: float = 0.0,
        dropout: float = 0.3,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 30,
        min_steps: int = 50,
        max_steps: int = 3000,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.parents = parents
        self.method = method
        self.input = input
        self.sr = sr
        self.n_mels = n_mels
        self.channels = channels
        self.crop_frames = crop_frames
        self.freq_shift = freq_shift
        self.time_stretch = time_stretch
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.device = device
        self.seed = seed

    def _to_logmel(self, X: npt.ArrayLike, device: torch.device) -> torch.Tensor:
        x = np.asarray(X, dtype=np.float32)
        kind = self.input
        if kind == "auto":
            kind = "logmel" if x.ndim == 3 else "audio"
        if kind == "logmel":
            if x.ndim != 3 or x.shape[1] != self.n_mels:
                raise ValueError(f"log-mel input must be (N, {self.n_mels}, T), got {x.shape}")
            return torch.as_tensor(x, device=device)
        if x.ndim != 2:
            raise ValueError(f"audio input must be (N, samples), got {x.shape}")
        mel = TorchLogMel(sr=self.sr, n_mels=self.n_mels).to(device)
        with torch.no_grad():
            parts = [
                mel(torch.as_tensor(x[s : s + 64], device=device)) for s in range(0, len(x), 64)
            ]
        return torch.cat(parts)

    def fit(
        self, X: npt.ArrayLike, Y: npt.ArrayLike, *, sample_weight: npt.ArrayLike | None = None
    ) -> LogMelCNN:
        """Fit on log-mel patches (N, n_mels, T) or audio (N, samples) and labels (N, K).

        Returns
        -------
        self
        """
        h = Hierarchy(np.asarray(self.parents))
        y = np.asarray(Y, dtype=np.float32)
        if y.ndim != 2 or y.shape[1] != h.n_nodes:
            raise ValueError(f"Y must be (N, {h.n_nodes}), got {y.shape}")
        device = auto_device(self.device)
        torch.manual_seed(self.seed)
        x = self._to_logmel(X, device)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"X has {x.shape[0]} rows, Y has {y.shape[0]}")
        self.band_mean_ = x.mean(dim=(0, 2)).cpu().numpy().astype(np.float32)
        self.band_std_ = x.std(dim=(0, 2)).clamp(min=1e-5).cpu().numpy().astype(np.float32)
        mean = torch.as_tensor(self.band_mean_, device=device)[None, :, None]
        std = torch.as_tensor(self.band_std_, device=device)[None, :, None]
        x = (x - mean) / std

        groups = single_label_sibling_groups(h, y) if self.method == "conditional" else []
        self.hierarchy_ = h
        self.softmax_groups_ = groups
        self.head_ = _GroupedHead(h, groups)
        conditional = self.method == "conditional"
        packed = torch.as_tensor(pack_targets(h, y, conditional=conditional), device=device)
        sw = np.ones(y.shape[0], np.float32) if sample_weight is None else sample_weight
        wt = torch.as_tensor(np.asarray(sw, dtype=np.float32), device=device)
        net = _Net(self.n_mels, h.n_nodes, tuple(self.channels), self.dropout).to(device)
        crop = int(self.crop_frames)
        shift = int(self.freq_shift)
        stretch = float(self.time_stretch)

        def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            if shift > 0:
                xb = _shift_rows(xb, shift, gen)
            if stretch > 0:
                factor = 1.0 + stretch * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
                size = max(1, round(xb.shape[-1] * factor))
                xb = torch.nn.functional.interpolate(xb, size=size, mode="linear")
            t = xb.shape[-1]
            if crop <= 0 or t <= crop:
                return xb
            start = int(torch.randint(0, t - crop + 1, (1,), generator=gen))
            return xb[..., start : start + crop]

        self.loss_curve_ = train_loop(
            net,
            hierarchical_loss(self.head_, device, conditional=conditional),
            x,
            packed,
            wt,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            min_steps=self.min_steps,
            max_steps=self.max_steps,
            seed=self.seed,
            augment=augment,
        )
        self.module_ = net.cpu().eval()
        return self

    @torch.inference_mode()
    def predict_proba(self, X: npt.ArrayLike, *, batch_size: int = 64) -> npt.NDArray[np.float64]:
        """(N, K) hierarchy-consistent probabilities for log-mel patches or audio."""
        if not hasattr(self, "module_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet.")
        device = auto_device(self.device)
        x = self._to_logmel(X, device)
        mean = torch.as_tensor(self.band_mean_, device=device)[None, :, None]
        std = torch.as_tensor(self.band_std_, device=device)[None, :, None]
        net = self.module_.to(device)
        head = self.head_.to(device)
        out = []
        for s in range(0, x.shape[0], batch_size):
            logits = net((x[s : s + batch_size] - mean) / std)
            p = torch.sigmoid(logits) if self.method == "flat" else head.marginals(logits)
            out.append(p.double().cpu().numpy())
        self.module_.cpu()
        probs = np.concatenate(out) if out else np.zeros((0, self.hierarchy_.n_nodes))
        if self.method == "flat":
            probs = self.hierarchy_.make_consistent(probs)
        return np.clip(probs, 0.0, 1.0)
