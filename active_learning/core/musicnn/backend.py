"""Clip embeddings from pretrained musicnn (MTT_musicnn / MSD_musicnn), for the feature pipeline.

A clip is resampled to 16 kHz (soxr HQ, like ``librosa.load``), turned into musicnn's log-mel
patches (187 frames ~ 3 s, non-overlapping; trailing frames dropped; a clip shorter than one patch
is repeat-padded to one patch, see :func:`~.preprocess.make_patches`), run through the network, and
summarised by averaging each selected per-patch output over the clip's patches:

======================  =====  ==================================================
part                    dim    per-patch output
======================  =====  ==================================================
``"penultimate"``       200    BN(ReLU(Dense200)), the layer before the tag logits
``"mean_pool"``         753    mean over time of the mid-end features
``"max_pool"``          753    max over time of the mid-end features
``"taggram"``           50     tag probabilities (MTT or MSD tags)
======================  =====  ==================================================

The default embedding is ``penultimate + mean_pool + max_pool`` (D = 1706), concatenated in the
order given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from active_learning.core.musicnn.model import Musicnn, MusicnnOutputs
from active_learning.core.musicnn.preprocess import (
    TorchMel,
    logmel_librosa,
    make_patches,
    resample_to_16k,
)

__all__ = ["DEFAULT_PARTS", "PART_DIMS", "EmbeddingBackend", "MusicnnBackend"]

PART_DIMS = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "taggram": 50}
DEFAULT_PARTS = ("penultimate", "mean_pool", "max_pool")
VERSION = "0.1.0+torchport1"


class EmbeddingBackend(Protocol):
    """What the feature pipeline needs from an audio embedding model."""

    name: str
    version: str
    dim: int

    def embed(self, audio: npt.NDArray[Any], sr: int) -> npt.NDArray[np.float32]: ...

    def embed_many(self, clips: list[tuple[npt.NDArray[Any], int]]) -> npt.NDArray[np.float32]: ...


class MusicnnBackend:
    """musicnn clip embeddings (torch; no TensorFlow).

    Parameters
    ----------
    weights_dir
        Directory filled by ``python -m active_learning.core.musicnn.fetch --dest DIR``.
    model
        ``"MSD_musicnn"`` (default) or ``"MTT_musicnn"``.
    device
        Torch device for the network (default CPU). Threads are left to the caller
        (``torch.set_num_threads``).
    parts
        Which per-patch outputs make up the embedding, in order (see the module doc).
    mel
        ``"torch"`` (default, fast) or ``"librosa"`` (musicnn's own call); both are validated
        against the TensorFlow reference.
    batch_patches
        Patches per network call in :meth:`embed_many` (patches of several clips share a batch).
    """

    def __init__(
        self,
        weights_dir: str | os.PathLike[str],
        *,
        model: str = "MSD_musicnn",
        device: str | torch.device | None = None,
        parts: Sequence[str] = DEFAULT_PARTS,
        mel: str = "torch",
        batch_patches: int = 32,
    ) -> None:
        unknown = [p for p in parts if p not in PART_DIMS]
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty subset of {list(PART_DIMS)}, got {parts}")
        if mel not in ("torch", "librosa"):
            raise ValueError(f"mel must be 'torch' or 'librosa', got {mel!r}")
        self.model = model
        self.parts = tuple(parts)
        self.mel = mel
        self.batch_patches = int(batch_patches)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.name = f"musicnn-{model.split('_')[0]}"
        suffix = "" if self.parts == DEFAULT_PARTS else "+" + "+".join(self.parts)
        self.version = VERSION + suffix
        self.dim = sum(PART_DIMS[p] for p in self.parts)
        self.net = Musicnn.from_checkpoint(weights_dir, model).to(self.device)
        self.labels = self.net.labels
        self._torch_mel = TorchMel() if mel == "torch" else None

    def patches(self, audio: npt.NDArray[Any], sr: int) -> npt.NDArray[np.float32]:
        """Mono clip -> (n_patches, 187, 96) float32 log-mel patches (n_patches >= 1)."""
        y = resample_to_16k(audio, sr)
        if y.size == 0:
            raise ValueError("empty clip")
        tm = self._torch_mel
        return make_patches(tm(y).numpy() if tm is not None else logmel_librosa(y))

    def run_patches(self, patches: npt.NDArray[Any]) -> MusicnnOutputs:
        """(B, 187, 96) patches -> per-patch outputs as CPU float32 tensors, in batches."""
        outs = []
        x_all = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
        with torch.inference_mode():
            for x in torch.split(x_all, max(1, self.batch_patches)):
                o = self.net(x.to(self.device))
                outs.append(MusicnnOutputs(*(t.cpu() for t in o)))
        return MusicnnOutputs(*(torch.cat(ts) for ts in zip(*outs, strict=True)))

    def embed(self, audio: npt.NDArray[Any], sr: int) -> npt.NDArray[np.float32]:
        """Mono clip -> (dim,) float32 embedding."""
        emb: npt.NDArray[np.float32] = self.embed_many([(audio, sr)])[0]
        return emb

    def embed_many(self, clips: list[tuple[npt.NDArray[Any], int]]) -> npt.NDArray[np.float32]:
        """Clips ``[(audio (S_i,), sr_i), ...]`` -> (n, dim) float32; patches batched across clips."""
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        per_clip = [self.patches(audio, sr) for audio, sr in clips]
        counts = torch.tensor([p.shape[0] for p in per_clip])
        out = self.run_patches(np.concatenate(per_clip))
        clip_index = torch.repeat_interleave(torch.arange(len(clips)), counts)
        feats = []
        for part in self.parts:
            per_patch = getattr(out, part)  # (B_total, d)
            sums = torch.zeros(len(clips), per_patch.shape[1], dtype=torch.float64)
            sums.index_add_(0, clip_index, per_patch.double())
            feats.append(sums / counts.unsqueeze(1))
        result: npt.NDArray[np.float32] = torch.cat(feats, dim=1).float().numpy()
        return result
