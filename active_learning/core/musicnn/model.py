"""musicnn (Pons & Serra, 2019) re-implemented in torch, inference only.

The graph is ``musicnn.models.build_musicnn`` of musicnn 0.1.0 with ``num_filt_midend=64`` and
``num_units_backend=200`` (``MTT_musicnn`` and ``MSD_musicnn``), with every batch norm in inference
mode (moving statistics, epsilon 1e-3) and dropout off. Shapes, for B patches of T frames
(T = 187 for the published models) and 96 mel bands:

* front end: BN on the input; timbral convs 7x38 and 7x67 (204 filters each; 3 zero frames of
  time padding, ``valid``); temporal convs 128x1, 64x1, 32x1 (51 filters each, TF ``same``: for
  an even kernel k, (k-1)//2 zeros before and k//2 after); each conv -> ReLU -> BN -> max over
  frequency. Concat: (B, 561, T) in the order [f74, f77, s128, s64, s32].
* mid end: three 7-tap convs (64 filters, 3 zero frames each side) -> ReLU -> BN; the 2nd and
  3rd residual. Dense concat: (B, 753, T).
* back end: max and mean over time, each (B, 753), interleaved ``[max_0, mean_0, max_1, ...]``
  to 1506 (TF's concat on a trailing axis + flatten); BN -> Dense(200) -> ReLU -> BN =
  ``penultimate``; Dense(50) = ``logits``; sigmoid = ``taggram``.

Two equivalent front ends:

* ``fast=False``: the literal translation, conv -> +bias -> ReLU -> BN -> max over frequency.
* ``fast=True`` (default): the max over frequency is taken straight after the convolution, then
  +bias -> ReLU -> BN on the (B, C, T) result. Adding a constant, ReLU and a positive scale are
  monotone non-decreasing (also under float rounding), so they commute with max; channels whose
  BN scale is negative have their kernel negated beforehand (max(-y) = -min(y); negation is
  exact) and the sign restored after the max. Same numbers, three fewer passes over the largest
  tensors (B x 204 x T x 59 and x 30; B x 51 x T x 96).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from active_learning.core.musicnn.checkpoint import read_checkpoint

__all__ = [
    "MODELS",
    "MSD_LABELS",
    "MTT_LABELS",
    "Musicnn",
    "MusicnnOutputs",
    "checkpoint_prefix",
]

MODELS = ("MTT_musicnn", "MSD_musicnn")
BN_EPSILON = 1e-3

# musicnn/configuration.py (musicnn 0.1.0, ISC licence, (c) MTG-UPF 2019)
MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip

# Variable names in the checkpoints (creation order in build_musicnn).
_TIMBRAL = (("conv2d", "batch_normalization_1"), ("conv2d_1", "batch_normalization_2"))
_TEMPORAL = (
    ("conv2d_2", "batch_normalization_3"),
    ("conv2d_3", "batch_normalization_4"),
    ("conv2d_4", "batch_normalization_5"),
)
_MIDEND = (
    ("conv2d_5", "batch_normalization_6"),
    ("conv2d_6", "batch_normalization_7"),
    ("conv2d_7", "batch_normalization_8"),
)


class MusicnnOutputs(NamedTuple):
    """Per-patch outputs, B patches.

    Attributes
    ----------
    logits : (B, 50)
    taggram : (B, 50) sigmoid of the logits
    penultimate : (B, 200) BN(ReLU(Dense200(.))), the layer before the logits
    mean_pool : (B, 753) mean over time of the mid-end concat
    max_pool : (B, 753) max over time of the mid-end concat
    """

    logits: torch.Tensor
    taggram: torch.Tensor
    penultimate: torch.Tensor
    mean_pool: torch.Tensor
    max_pool: torch.Tensor


def checkpoint_prefix(weights_dir: str | os.PathLike[str], model: str) -> str:
    """The TF checkpoint prefix of ``model`` under ``weights_dir`` (``<dir>/<model>/``)."""
    if model not in MODELS:
        raise ValueError(f"unknown musicnn model {model!r}; expected one of {MODELS}")
    return os.fspath(Path(weights_dir) / model) + os.sep


def _bn_affine(w: dict[str, npt.NDArray[Any]], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference batch norm as ``x * scale + shift`` (what TF's fused batch norm computes)."""
    gamma = w[f"{name}/gamma"].astype(np.float32)
    beta = w[f"{name}/beta"].astype(np.float32)
    mean = w[f"{name}/moving_mean"].astype(np.float32)
    var = w[f"{name}/moving_variance"].astype(np.float32)
    scale = gamma / np.sqrt(var + np.float32(BN_EPSILON))
    shift = beta - mean * scale
    return torch.from_numpy(scale.astype(np.float32)), torch.from_numpy(shift.astype(np.float32))


def _same_pad(k: int) -> tuple[int, int]:
    # TF 'same' with stride 1: total k-1, the odd one after.
    return (k - 1) // 2, k // 2


class Musicnn(nn.Module):
    """musicnn inference network (eval mode only; no parameters require grad).

    Parameters
    ----------
    weights
        Checkpoint tensors by TF variable name (see :func:`read_checkpoint`).
    fast
        Take the max over frequency before bias/ReLU/BN (default; exact, see the module doc).
    """

    # Buffers read as attributes (registered in ``__init__``; annotations only, for the checker).
    in_scale: torch.Tensor
    in_shift: torch.Tensor
    flat_s: torch.Tensor
    flat_t: torch.Tensor
    dense_w: torch.Tensor
    dense_b: torch.Tensor
    pen_s: torch.Tensor
    pen_t: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    model_name: str

    def __init__(self, weights: dict[str, npt.NDArray[Any]], *, fast: bool = True) -> None:
        super().__init__()
        self.fast = fast
        w = weights
        n_classes = int(w["dense_1/kernel"].shape[1])
        self.labels = MTT_LABELS if n_classes == 50 else ()

        s, b = _bn_affine(w, "batch_normalization")
        self.register_buffer("in_scale", s)
        self.register_buffer("in_shift", s.new_zeros(1) + b)

        # Timbral: TF kernel (7, kw, 1, 204) -> torch (204, 1, 7, kw).
        self.timbral_widths = []
        for i, (conv, bn) in enumerate(_TIMBRAL):
            k = torch.from_numpy(w[f"{conv}/kernel"].astype(np.float32))
            self.register_buffer(f"tim{i}_w", k.permute(3, 2, 0, 1).contiguous())
            self.register_buffer(f"tim{i}_b", torch.from_numpy(w[f"{conv}/bias"].copy()))
            s, b = _bn_affine(w, bn)
            self.register_buffer(f"tim{i}_s", s)
            self.register_buffer(f"tim{i}_t", b)
            self.timbral_widths.append(int(k.shape[1]))
        self.timbral_taps = int(w[f"{_TIMBRAL[0][0]}/kernel"].shape[0])  # 7

        for i, (conv, bn) in enumerate(_TEMPORAL):
            k = torch.from_numpy(w[f"{conv}/kernel"].astype(np.float32))  # (k, 1, 1, 51)
            self.register_buffer(f"tem{i}_w", k.permute(3, 2, 0, 1).contiguous())
            self.register_buffer(f"tem{i}_b", torch.from_numpy(w[f"{conv}/bias"].copy()))
            s, b = _bn_affine(w, bn)
            self.register_buffer(f"tem{i}_s", s)
            self.register_buffer(f"tem{i}_t", b)

        for i, (conv, bn) in enumerate(_MIDEND):
            k = torch.from_numpy(w[f"{conv}/kernel"].astype(np.float32))  # (7, C_in, 1, 64)
            self.register_buffer(f"mid{i}_w", k[:, :, 0, :].permute(2, 1, 0).contiguous())
            self.register_buffer(f"mid{i}_b", torch.from_numpy(w[f"{conv}/bias"].copy()))
            s, b = _bn_affine(w, bn)
            self.register_buffer(f"mid{i}_s", s)
            self.register_buffer(f"mid{i}_t", b)

        s, b = _bn_affine(w, "batch_normalization_9")
        self.register_buffer("flat_s", s)
        self.register_buffer("flat_t", b)
        self.register_buffer("dense_w", torch.from_numpy(w["dense/kernel"].copy()))
        self.register_buffer("dense_b", torch.from_numpy(w["dense/bias"].copy()))
        s, b = _bn_affine(w, "batch_normalization_10")
        self.register_buffer("pen_s", s)
        self.register_buffer("pen_t", b)
        self.register_buffer("out_w", torch.from_numpy(w["dense_1/kernel"].copy()))
        self.register_buffer("out_b", torch.from_numpy(w["dense_1/bias"].copy()))
        for prefix, n in (("tim", 2), ("tem", 3)):
            for i in range(n):
                sign = torch.where(getattr(self, f"{prefix}{i}_s") < 0, -1.0, 1.0)
                wsigned = getattr(self, f"{prefix}{i}_w") * sign.view(-1, 1, 1, 1)
                self.register_buffer(f"{prefix}{i}_sign", sign)
                self.register_buffer(f"{prefix}{i}_wsigned", wsigned.contiguous())
        self.eval()

    @classmethod
    def from_checkpoint(
        cls,
        weights_dir: str | os.PathLike[str],
        model: str = "MSD_musicnn",
        *,
        fast: bool = True,
    ) -> Musicnn:
        """Load ``<weights_dir>/<model>/`` (the musicnn 0.1.0 TF checkpoint)."""
        prefix = checkpoint_prefix(weights_dir, model)
        if not Path(prefix + ".index").is_file():
            raise FileNotFoundError(
                f"musicnn weights not found at {prefix}.index; fetch them with "
                f"`python -m active_learning.core.musicnn.fetch --dest {os.fspath(weights_dir)}`"
            )
        net = cls(read_checkpoint(prefix), fast=fast)
        net.labels = MTT_LABELS if model.startswith("MTT") else MSD_LABELS
        net.model_name = model
        return net

    # ------------------------------------------------------------------ front end

    @staticmethod
    def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)

    def _timbral_direct(self, xn: torch.Tensor) -> list[torch.Tensor]:
        xp = F.pad(xn, (0, 0, 3, 3))
        out = []
        for i in range(2):
            y = F.conv2d(xp, getattr(self, f"tim{i}_w"), getattr(self, f"tim{i}_b"))
            y = self._affine(F.relu(y), getattr(self, f"tim{i}_s"), getattr(self, f"tim{i}_t"))
            out.append(y.amax(dim=3))
        return out

    def _conv_max_first(
        self, xp: torch.Tensor, prefix: str, i: int, *, max_chunk: int = 3
    ) -> torch.Tensor:
        """conv -> max over frequency -> sign -> +bias -> ReLU -> BN, in chunks of patches.

        Small chunks keep the conv output in cache: 3 patches/chunk measured ~30 % faster than 8.
        """
        w = getattr(self, f"{prefix}{i}_wsigned")
        sign = getattr(self, f"{prefix}{i}_sign").view(1, -1, 1)
        parts = [F.conv2d(c, w).amax(dim=3) for c in torch.split(xp, max_chunk)]
        y = torch.cat(parts) * sign + getattr(self, f"{prefix}{i}_b").view(1, -1, 1)
        return self._affine(
            F.relu(y), getattr(self, f"{prefix}{i}_s"), getattr(self, f"{prefix}{i}_t")
        )

    def _temporal(self, xn: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(3):
            wt = getattr(self, f"tem{i}_w")
            before, after = _same_pad(int(wt.shape[2]))
            y = F.conv2d(F.pad(xn, (0, 0, before, after)), wt, getattr(self, f"tem{i}_b"))
            y = self._affine(F.relu(y), getattr(self, f"tem{i}_s"), getattr(self, f"tem{i}_t"))
            out.append(y.amax(dim=3))
        return out

    def _midend(self, front: torch.Tensor) -> torch.Tensor:
        feats = [front]
        x = front
        for i in range(3):
            y = F.conv1d(F.pad(x, (3, 3)), getattr(self, f"mid{i}_w"), getattr(self, f"mid{i}_b"))
            y = self._affine(F.relu(y), getattr(self, f"mid{i}_s"), getattr(self, f"mid{i}_t"))
            x = y if i == 0 else y + x
            feats.append(x)
        return torch.cat(feats, dim=1)  # (B, 753, T)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> MusicnnOutputs:
        """Run B patches.

        Parameters
        ----------
        x
            (B, T, 96) float32 log-mel patches (time x mel), T = 187 for the published models.

        Returns
        -------
        MusicnnOutputs
            logits, taggram (B, 50); penultimate (B, 200); mean_pool, max_pool (B, 753).
        """
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, 96) patches, got {tuple(x.shape)}")
        xn = (x.float() * self.in_scale + self.in_shift).unsqueeze(1)  # (B, 1, T, 96)
        if self.fast:
            xp = F.pad(xn, (0, 0, 3, 3))
            feats = [self._conv_max_first(xp, "tim", i) for i in range(2)]
            for i in range(3):
                before, after = _same_pad(int(getattr(self, f"tem{i}_w").shape[2]))
                feats.append(self._conv_max_first(F.pad(xn, (0, 0, before, after)), "tem", i))
        else:
            feats = self._timbral_direct(xn) + self._temporal(xn)
        front = torch.cat(feats, dim=1)  # (B, 561, T)
        dense = self._midend(front)
        max_pool = dense.amax(dim=2)
        mean_pool = dense.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).reshape(x.shape[0], -1)  # interleaved
        flat = flat * self.flat_s + self.flat_t
        pen = F.relu(flat @ self.dense_w + self.dense_b) * self.pen_s + self.pen_t
        logits = pen @ self.out_w + self.out_b
        return MusicnnOutputs(logits, torch.sigmoid(logits), pen, mean_pool, max_pool)
