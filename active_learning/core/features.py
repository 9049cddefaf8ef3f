"""Audio decoding, pluggable clip-embedding backends and an on-disk feature store.

A *backend* maps one mono waveform to a fixed-length float32 vector (D,). Backends are named and
versioned; the name and version travel with every stored feature set so that a model is never trained
on a mixture of incompatible features.

Backends
--------
``logmel-stats`` : :class:`LogMelStatsBackend`
    Summary statistics of a 64-band log-mel spectrogram at 22.05 kHz (D = 403, see the class).
``musicnn-msd`` / ``musicnn-mtt`` : ``active_learning.core.musicnn.backend.MusicnnBackend``
    Torch port of the pretrained musicnn taggers (200-d penultimate embedding); imported lazily.
``torch-export`` / ``torchscript`` : :class:`TorchCheckpointBackend`
    A user-supplied model mapping a (1, samples) waveform to an embedding: a ``torch.export``
    archive (``.pt2``, the format to use from torch 2.13 on) or a TorchScript file (deprecated in
    torch 2.13, still read).

The store (:class:`FeatureStore`) keeps one feature set as a single (N, D) float32 ``.npy`` matrix plus a
JSON sidecar. Extraction writes numbered chunk files first (so a killed worker loses at most its chunk)
and :meth:`FeatureStore.consolidate` joins them; :meth:`FeatureStore.load` memory-maps the matrix.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from active_learning.core.signal import cqt_patches, resample

F32 = npt.NDArray[np.float32]
Array = npt.NDArray[Any]

__all__ = [
    "AudioDecodeError",
    "Blobs",
    "CQTPatchBackend",
    "ConcatBackend",
    "EmbeddingBackend",
    "FeatureSet",
    "FeatureStore",
    "LocalBlobs",
    "LogMelStatsBackend",
    "TorchCheckpointBackend",
    "available_backends",
    "decode_audio",
    "get_backend",
    "register_backend",
    "resample",
]


# --------------------------------------------------------------------------------------------------
# Decoding and resampling
# --------------------------------------------------------------------------------------------------


class AudioDecodeError(ValueError):
    """A clip could not be turned into samples: missing, corrupt, empty or an unsupported format.

    The message is meant to be stored as the clip's failure reason.
    """


def decode_audio(
    path: str | os.PathLike[str],
    *,
    max_frames: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    block: int = 1 << 16,
) -> tuple[F32, int]:
    """Decode an audio file to mono float32 with soundfile (wav, flac, ogg, mp3).

    Channels are averaged block by block, so memory holds the mono signal and one block, never the
    whole multi-channel stream; with ``max_frames`` the frame count is read from the header first and
    a longer file is refused before anything is allocated.

    Parameters
    ----------
    path : path-like
        The audio file.
    max_frames : int, optional
        Most frames (samples per channel) to decode; a file (or window) whose header declares more is
        refused.
    start_s, end_s : float, optional
        Decode only this window of the file (a segment clip), in seconds.
    block : int
        Frames decoded per step.

    Returns
    -------
    audio : (samples,) float32
        Mono signal (channels averaged), in [-1, 1].
    sr : int
        Sample rate of the file.

    Raises
    ------
    AudioDecodeError
        If the file is missing, cannot be decoded, holds no samples, holds non-finite samples, or
        declares more than ``max_frames`` frames.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioDecodeError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise AudioDecodeError(f"{p}: empty file (0 bytes)")
    try:
        with sf.SoundFile(str(p)) as f:
            frames, sr, channels = int(f.frames), int(f.samplerate), int(f.channels)
            first = min(max(round((start_s or 0.0) * sr), 0), frames)
            if end_s is not None:
                frames = min(frames, max(round(end_s * sr), first))
            frames -= first
            if max_frames is not None and frames > max_frames:
                raise AudioDecodeError(
                    f"{p}: {frames} frames ({frames / max(sr, 1):.0f} s at {sr} Hz) exceed the "
                    f"limit of {max_frames} decoded frames (REFRAIN_MAX_DECODED_FRAMES)"
                )
            if frames <= 0 or sr <= 0 or channels <= 0:
                raise AudioDecodeError(f"{p}: decoded to zero samples")
            audio: F32 = np.empty(frames, dtype=np.float32)
            n = 0
            f.seek(first)
            for chunk in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                take = min(len(chunk), frames - n)
                if take <= 0:
                    break
                part = chunk[:take]
                audio[n : n + take] = (
                    part.mean(axis=1, dtype=np.float32) if channels > 1 else part[:, 0]
                )
                n += take
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        # LibsndfileError covers "Format not recognised" and truncated/corrupt streams.
        raise AudioDecodeError(f"{p}: cannot decode ({exc})") from exc
    if n == 0:
        raise AudioDecodeError(f"{p}: decoded to zero samples")
    audio = audio[:n]
    if not np.all(np.isfinite(audio)):
        raise AudioDecodeError(f"{p}: decoded samples are not finite")
    return audio, sr


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class EmbeddingBackend(Protocol):
    """Maps mono audio to a fixed-length embedding."""

    name: str
    version: str
    dim: int

    def embed(self, audio: Array, sr: int) -> Array:
        """(samples,) mono float32 at ``sr`` -> (dim,) float32."""
        ...

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        """List of (audio, sr) -> (n, dim) float32."""
        ...


class LogMelStatsBackend:
    """Summary statistics of a log-mel spectrogram (no learned weights; fast on one core).

    The clip is resampled to ``sr`` (22,050 Hz), framed with ``n_fft`` = 2048 / hop 512 (torch STFT,
    Hann window), mapped to ``n_mels`` = 64 mel bands (librosa's Slaney filterbank) and compressed with
    ``log(1e-6 + mel power)``. The embedding concatenates, in this order:

    ==========================================================  ===========
    block                                                       size
    ==========================================================  ===========
    per-band mean of log-mel                                    n_mels
    per-band std of log-mel                                     n_mels
    per-band mean of abs(first time difference)                 n_mels
    per-band std of first time difference                       n_mels
    per-band mean of abs(second time difference)                n_mels
    12 pitch-class (chroma) means, per-frame max-normalised     12
    8 spectral descriptors, mean then std                       16
    per-band mean of log-mel after per-frame mean removal       n_mels
    mean and std of frame log-energy                            2
    fraction of frames 10 nats below the loudest frame          1
    ==========================================================  ===========

    ``dim`` = 6·n_mels + 31 = **415** for 64 bands. The 8 descriptors are spectral centroid,
    bandwidth, 85 % rolloff (as fractions of Nyquist), flatness, zero-crossing rate, RMS, spectral flux
    and onset strength (mean positive log-mel difference).
    Nothing here depends on tempo estimation.
    """

    name = "logmel-stats"
    version = "1"

    def __init__(
        self, *, sr: int = 22050, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 64
    ) -> None:
        self.sr = sr
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.dim = 6 * n_mels + 31
        self._mel_fb: F32 | None = None
        self._chroma_fb: F32 | None = None

    def _filters(self) -> tuple[F32, F32]:
        if self._mel_fb is None or self._chroma_fb is None:
            import librosa

            self._mel_fb = librosa.filters.mel(
                sr=self.sr, n_fft=self.n_fft, n_mels=self.n_mels
            ).astype(np.float32)
            self._chroma_fb = librosa.filters.chroma(sr=self.sr, n_fft=self.n_fft).astype(
                np.float32
            )
        return self._mel_fb, self._chroma_fb

    def _stft_power(self, y: F32) -> F32:
        # torch.stft is ~3x faster than librosa's numpy STFT on one core and needs no numba JIT.
        import torch

        t = torch.from_numpy(y)
        win = torch.hann_window(self.n_fft)
        spec = torch.stft(
            t,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=win,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (spec.real**2 + spec.imag**2).numpy().astype(np.float32, copy=False)

    def embed(self, audio: Array, sr: int) -> Array:
        """(samples,) float32 at ``sr`` -> (dim,) float32 statistics (see class docstring)."""
        y = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sr, self.sr)
        if y.size < self.n_fft:
            y = np.pad(y, (0, self.n_fft - y.size))
        mel_fb, chroma_fb = self._filters()
        power = self._stft_power(y)  # (F, T)
        mag = np.sqrt(power)
        mel = mel_fb @ power  # (M, T)
        logmel = np.log(mel + 1e-6)
        d1 = np.diff(logmel, axis=1) if logmel.shape[1] > 1 else np.zeros_like(logmel)
        d2 = np.diff(d1, axis=1) if d1.shape[1] > 1 else np.zeros_like(d1)
        chroma = chroma_fb @ power
        chroma = chroma / np.maximum(chroma.max(axis=0, keepdims=True), 1e-10)

        freqs = np.linspace(0.0, self.sr / 2, power.shape[0], dtype=np.float32)[:, None]
        msum = np.maximum(mag.sum(axis=0), 1e-10)
        centroid = (freqs * mag).sum(axis=0) / msum
        bandwidth = np.sqrt(((freqs - centroid) ** 2 * mag).sum(axis=0) / msum)
        cum = np.cumsum(mag, axis=0)
        rolloff = freqs[np.argmax(cum >= 0.85 * cum[-1:], axis=0), 0]
        flatness = np.exp(np.mean(np.log(power + 1e-10), axis=0)) / (np.mean(power, axis=0) + 1e-10)
        frames = _frame(y, self.n_fft, self.hop_length)
        zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=0)), axis=0)
        rms = np.sqrt(np.mean(frames**2, axis=0))
        flux = np.r_[0.0, np.sqrt(np.mean(np.diff(mag, axis=1) ** 2, axis=0))]
        onset = np.r_[0.0, np.mean(np.maximum(d1, 0.0), axis=0)]
        t = min(len(centroid), len(zcr))
        desc = np.stack(
            [
                centroid[:t] / (self.sr / 2),
                bandwidth[:t] / (self.sr / 2),
                rolloff[:t] / (self.sr / 2),
                flatness[:t],
                zcr[:t],
                rms[:t],
                flux[:t],
                onset[:t],
            ]
        )
        frame_energy = np.log(np.mean(mel, axis=0) + 1e-6)
        cmn = logmel - logmel.mean(axis=0, keepdims=True)
        feats = np.concatenate(
            [
                logmel.mean(axis=1),
                logmel.std(axis=1),
                np.abs(d1).mean(axis=1),
                d1.std(axis=1),
                np.abs(d2).mean(axis=1),
                chroma.mean(axis=1),
                desc.mean(axis=1),
                desc.std(axis=1),
                cmn.mean(axis=1),
                [frame_energy.mean(), frame_energy.std()],
                [np.mean(frame_energy < frame_energy.max() - 10.0)],
            ]
        ).astype(np.float32)
        assert feats.shape == (self.dim,), feats.shape
        out: F32 = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        """List of (audio, sr) -> (n, dim) float32."""
        return _stack([self.embed(a, s) for a, s in clips], self.dim)


class CQTPatchBackend:
    """A clip's log-magnitude CQT patch, flattened: the input of the end-to-end CNN, not an embedding.

    (n_bins, frames) = (72, 216) by default: one bin per semitone from C2, hop 1024 at 22,050 Hz,
    10 s centre-cropped or edge-padded (:func:`active_learning.core.signal.cqt_patches`), stored as a
    (n_bins * frames,) float32 row so that the :class:`FeatureStore` keeps one memory-mappable matrix;
    :meth:`patches` turns rows back into (N, n_bins, frames). 62 KB per clip: 6 GB for 100k clips,
    meant for projects that train the CNN on a GPU worker.
    """

    name = "cqt-patches"

    def __init__(self, *, n_bins: int = 72, frames: int = 216, hop_length: int = 1024) -> None:
        self.n_bins = n_bins
        self.frames = frames
        self.hop_length = hop_length
        self.version = f"1 ({n_bins}x{frames}, hop {hop_length})"
        self.dim = n_bins * frames

    def embed(self, audio: Array, sr: int) -> Array:
        patch = cqt_patches(
            [(np.asarray(audio, dtype=np.float32), sr)],
            hop_length=self.hop_length,
            n_bins=self.n_bins,
            frames=self.frames,
        )
        return patch.reshape(-1)

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        return _stack([self.embed(a, r) for a, r in clips], self.dim)

    @staticmethod
    def patches(X: Array, n_bins: int = 72) -> F32:
        """(N, n_bins * frames) rows -> (N, n_bins, frames) float32."""
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] % n_bins:
            raise ValueError(f"rows of length {x.shape[-1]} are not {n_bins}-bin CQT patches")
        return x.reshape(x.shape[0], n_bins, x.shape[1] // n_bins)


class ConcatBackend:
    """Several backends side by side: ``"logmel-stats+musicnn-msd+structure-stats"``.

    The embedding is the parts' embeddings concatenated in the order named; ``name`` and ``version``
    join the parts' with ``+``, so a feature set records exactly what produced each block of columns.
    (On the corpus this combination is the strongest embedding measured: ``bench/al_corpus_structure.py``.)
    """

    def __init__(self, parts: Sequence[EmbeddingBackend]) -> None:
        if len(parts) < 2:
            raise ValueError("a combined backend needs at least two parts")
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)
        self.version = "+".join(str(p.version) for p in self.parts)
        self.dim = sum(int(p.dim) for p in self.parts)

    def embed(self, audio: Array, sr: int) -> Array:
        return np.concatenate(
            [np.asarray(p.embed(audio, sr), dtype=np.float32) for p in self.parts]
        )

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        return np.concatenate(
            [np.asarray(p.embed_many(clips), dtype=np.float32) for p in self.parts], axis=1
        )


def _frame(y: F32, frame_length: int, hop: int) -> F32:
    pad = frame_length // 2
    yp = np.pad(y, (pad, pad))
    n = 1 + (yp.size - frame_length) // hop
    return np.lib.stride_tricks.as_strided(
        yp, shape=(frame_length, n), strides=(yp.strides[0], yp.strides[0] * hop), writeable=False
    )


def _stack(rows: Sequence[Array], dim: int) -> F32:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


#: Suffix of ``torch.export.save`` archives; anything else is read as TorchScript.
EXPORT_SUFFIX = ".pt2"


class TorchCheckpointBackend:
    """A user-supplied torch model as an embedding backend.

    The model must map a float32 tensor of shape (1, samples) at ``sample_rate`` to an embedding of
    shape (1, dim) or (dim,) (any extra leading/time axes are mean-pooled down to (dim,)). Two file
    formats:

    * a ``torch.export`` archive (suffix ``.pt2``; ``torch.export.save``). Export it with the
      sample axis dynamic, since clips differ in length, e.g.
      ``torch.export.export(model, (torch.zeros(1, 16000),),
      dynamic_shapes={"x": {1: torch.export.Dim("samples", min=1024)}})``;
    * a TorchScript file (``torch.jit.save``; deprecated since torch 2.13, still read).

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    sample_rate : int
        Rate the model expects; input is resampled to it.
    name, version : str, optional
        Stored with the features; ``name`` defaults to ``torch-export`` or ``torchscript`` by
        format, ``version`` to the file's SHA-256 prefix so that a changed checkpoint never
        silently mixes with old features.
    device : str, optional
        ``"cuda"`` if available otherwise ``"cpu"`` when omitted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int = 16000,
        name: str | None = None,
        version: str | None = None,
        device: str | None = None,
    ) -> None:
        import hashlib

        import torch

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"torch checkpoint not found: {self.path}")
        exported = self.path.suffix == EXPORT_SUFFIX
        self.sample_rate = int(sample_rate)
        self.name = name or ("torch-export" if exported else "torchscript")
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.version = version or f"sha256:{digest}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._module: Callable[[Any], Any]
        if exported:
            module = torch.export.load(self.path).module()
            if self.device != "cpu":
                module = module.to(self.device)
            self._module = module
        else:
            self._module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(self.path), map_location=self.device
            ).eval()
        try:
            probe = self._run(np.zeros(self.sample_rate, dtype=np.float32))
        except Exception as exc:
            raise ValueError(
                f"{self.path.name}: the model does not take a (1, {self.sample_rate}) waveform "
                f"({type(exc).__name__}: {exc}); export it with the sample axis dynamic"
            ) from exc
        self.dim = int(probe.shape[0])

    def _run(self, y: F32) -> F32:
        import torch

        with torch.inference_mode():
            out = self._module(torch.from_numpy(y).to(self.device).reshape(1, -1))
        arr = np.asarray(out.detach().float().cpu().numpy(), dtype=np.float32)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim > 1:
            arr = arr.reshape(-1, arr.shape[-1]).mean(axis=0)
        return arr

    def embed(self, audio: Array, sr: int) -> Array:
        """(samples,) float32 at ``sr`` -> (dim,) float32."""
        return self._run(
            resample(np.asarray(audio, dtype=np.float32).reshape(-1), sr, self.sample_rate)
        )

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        """List of (audio, sr) -> (n, dim) float32."""
        return _stack([self.embed(a, s) for a, s in clips], self.dim)


BackendFactory = Callable[..., EmbeddingBackend]
_REGISTRY: dict[str, BackendFactory] = {}


#: The embedding a project uses unless its loop policy names another.
DEFAULT_BACKEND = "logmel-stats"
#: Backends that read a user's model file (``path`` option).
CHECKPOINT_BACKENDS = ("torch-export", "torchscript")


def is_model_file(name: str) -> bool:
    """A backend "name" that is really a model file path (torch.export or TorchScript)."""
    return name.endswith((EXPORT_SUFFIX, ".pt", ".ts", ".pth")) or os.sep in name


def backend_name(name: str | None) -> str:
    """The registry name a configured backend is stored under (``FeatureSet.backend``): a model
    file's format, anything else as it is."""
    name = name or DEFAULT_BACKEND
    if "+" not in name and name not in CHECKPOINT_BACKENDS and is_model_file(name):
        return "torch-export" if name.endswith(EXPORT_SUFFIX) else "torchscript"
    return name


def register_backend(name: str, factory: BackendFactory) -> None:
    """Register ``factory(**options) -> EmbeddingBackend`` under ``name`` (overwrites)."""
    _REGISTRY[name] = factory


def _musicnn(model: str) -> BackendFactory:
    def make(*, weights_dir: str | os.PathLike[str] = "var/models/musicnn", **options: Any) -> Any:
        # Lazy: the port is optional and heavier; only pay for it when asked.
        from active_learning.core.musicnn.backend import MusicnnBackend

        return MusicnnBackend(weights_dir, model=model, **options)

    return make


def _torch_checkpoint(backend: str) -> BackendFactory:
    def make(**options: Any) -> EmbeddingBackend:
        if "path" not in options:
            raise ValueError(f"the {backend!r} backend needs a path= option")
        path = options.pop("path")
        return TorchCheckpointBackend(path, **options)

    return make


register_backend("logmel-stats", lambda **o: LogMelStatsBackend(**o))
register_backend("musicnn-msd", _musicnn("MSD_musicnn"))
register_backend("musicnn-mtt", _musicnn("MTT_musicnn"))
register_backend("torch-export", _torch_checkpoint("torch-export"))
register_backend("torchscript", _torch_checkpoint("torchscript"))
register_backend("cqt-patches", lambda **o: CQTPatchBackend(**o))
register_backend(
    "structure-stats",
    lambda **o: __import__(
        "active_learning.core.structure", fromlist=["StructureStatsBackend"]
    ).StructureStatsBackend(**o),
)


def available_backends() -> list[str]:
    """Registered backend names."""
    return sorted(_REGISTRY)


def get_backend(name: str, **options: Any) -> EmbeddingBackend:
    """Instantiate a registered backend.

    Parameters
    ----------
    name : str
        One of :func:`available_backends` (``"logmel-stats"``, ``"musicnn-msd"``, ``"musicnn-mtt"``,
        ``"structure-stats"``, ``"torch-export"``, ``"torchscript"``, ``"cqt-patches"``).
        Names joined by ``+`` give a :class:`ConcatBackend` of those parts.
    **options
        Passed to the backend: ``weights_dir`` for musicnn; ``path``, ``sample_rate`` for a torch checkpoint.
        For a combined name, one dict of options per part, keyed by the part's name.

    Raises
    ------
    KeyError
        For an unknown name.
    """
    if "+" in name:
        # Combined: options are given per part, {"musicnn-msd": {"weights_dir": ...}, ...}.
        return ConcatBackend(
            [get_backend(part, **options.get(part, {})) for part in name.split("+")]
        )
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown embedding backend {name!r}; known: {available_backends()}"
        ) from None
    return factory(**options)


# --------------------------------------------------------------------------------------------------
# Feature store
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSet:
    """A loaded feature set.

    Attributes
    ----------
    X : (N, D) float32
        Memory-mapped, read-only; rows follow ``clip_ids``.
    clip_ids : list of str
        Row order.
    backend, version : str
        Backend that produced the features.
    meta : dict
        The whole sidecar.
    """

    X: Array
    clip_ids: list[str]
    backend: str
    version: str
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def rows_for(self, clip_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """(n,) row index of each requested clip id (KeyError if one is missing)."""
        index = {c: i for i, c in enumerate(self.clip_ids)}
        return np.asarray([index[str(c)] for c in clip_ids], dtype=np.int64)


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npy_bytes(arr: Array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@runtime_checkable
class Blobs(Protocol):
    """Where a :class:`FeatureStore` keeps its files: keys (``/``-separated, relative) to bytes.

    A local folder (:class:`LocalBlobs`) or, in the Django layer, a storage backend (a bucket). A
    write is atomic (a reader sees the old bytes or the new ones, never a part) and overwrites, so
    writing the same key twice leaves one object.
    """

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def names(self, folder: str) -> list[str]:
        """File names directly inside ``folder`` (empty when it does not exist)."""
        ...

    def delete_folder(self, folder: str) -> None: ...

    def local_path(self, key: str) -> Path:
        """A local file holding the key's bytes, to memory-map (the file itself, or a cached copy).

        Raises FileNotFoundError when the key does not exist."""
        ...


class LocalBlobs:
    """:class:`Blobs` over a local folder: keys are paths below ``root``; writes are temp + rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        _atomic_write_bytes(self.root / key, lambda fh: fh.write(data))

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def names(self, folder: str) -> list[str]:
        d = self.root / folder
        return [p.name for p in d.iterdir() if p.is_file()] if d.is_dir() else []

    def delete_folder(self, folder: str) -> None:
        d = self.root / folder
        if d.is_dir():
            for p in d.iterdir():
                p.unlink()
            d.rmdir()

    def local_path(self, key: str) -> Path:
        path = self.root / key
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path


class FeatureStore:
    """Feature sets as ``<set>.npy`` (N, D) float32 + ``<set>.json`` sidecar in a :class:`Blobs`.

    During extraction, chunks are written as ``<set>.chunks/<chunk:06d>.npy`` with a ``.json`` of
    their clip ids and failures; each chunk file is written atomically, so a chunk either exists
    whole or not at all. :meth:`pending_chunks` tells a resumed job what is left;
    :meth:`consolidate` stacks the chunks (in chunk order) into the single matrix.

    Parameters
    ----------
    root : path-like or Blobs
        A directory holding feature sets (created on demand), or any :class:`Blobs` (a bucket).
    prefix : str
        Key prefix of this store's sets inside ``root`` (``"project_3/features"``).
    """

    def __init__(self, root: str | os.PathLike[str] | Blobs, *, prefix: str = "") -> None:
        self.blobs: Blobs = root if isinstance(root, Blobs) else LocalBlobs(root)
        self.prefix = prefix.strip("/")
        self._lock = threading.Lock()

    # keys -----------------------------------------------------------------------------------------
    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def matrix_key(self, name: str) -> str:
        return self.key(f"{name}.npy")

    def sidecar_key(self, name: str) -> str:
        return self.key(f"{name}.json")

    def chunk_folder(self, name: str) -> str:
        return self.key(f"{name}.chunks")

    # local paths (a store over a local folder) -----------------------------------------------------
    @property
    def root(self) -> Path:
        if not isinstance(self.blobs, LocalBlobs):
            raise TypeError("this feature store is not a local folder")
        return self.blobs.root

    def matrix_path(self, name: str) -> Path:
        return self.root / self.matrix_key(name)

    def sidecar_path(self, name: str) -> Path:
        return self.root / self.sidecar_key(name)

    def chunk_dir(self, name: str) -> Path:
        return self.root / self.chunk_folder(name)

    # one-shot -------------------------------------------------------------------------------------
    def write(
        self,
        name: str,
        X: npt.ArrayLike,
        clip_ids: Sequence[str],
        *,
        backend: str,
        version: str,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Write a whole (N, D) matrix and its sidecar at once; returns the matrix key."""
        arr = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if arr.ndim != 2 or arr.shape[0] != len(clip_ids):
            raise ValueError(f"X has shape {arr.shape} but {len(clip_ids)} clip ids were given")
        self.blobs.write(self.matrix_key(name), _npy_bytes(arr))
        meta = {
            "backend": backend,
            "version": version,
            "dim": int(arr.shape[1]),
            "n": int(arr.shape[0]),
            "dtype": "float32",
            "clip_ids": [str(c) for c in clip_ids],
            **(extra or {}),
        }
        # The sidecar last: a set exists only when both are written.
        self.blobs.write(self.sidecar_key(name), json.dumps(meta).encode("utf-8"))
        return self.matrix_key(name)

    def exists(self, name: str) -> bool:
        return self.blobs.exists(self.sidecar_key(name)) and self.blobs.exists(
            self.matrix_key(name)
        )

    def load(self, name: str, *, mmap: bool = True) -> FeatureSet:
        """Load a consolidated feature set; the matrix is memory-mapped read-only by default."""
        meta = json.loads(self.blobs.read(self.sidecar_key(name)).decode("utf-8"))
        path = self.blobs.local_path(self.matrix_key(name))
        X = np.load(path, mmap_mode="r" if mmap else None)
        if X.shape != (meta["n"], meta["dim"]):
            raise ValueError(f"{name}: matrix shape {X.shape} disagrees with sidecar")
        return FeatureSet(
            X=X,
            clip_ids=list(meta["clip_ids"]),
            backend=str(meta["backend"]),
            version=str(meta["version"]),
            meta=meta,
        )

    # chunked --------------------------------------------------------------------------------------
    def write_chunk(
        self,
        name: str,
        chunk: int,
        X: npt.ArrayLike,
        clip_ids: Sequence[str],
        *,
        backend: str,
        version: str,
        failures: dict[str, str] | None = None,
    ) -> None:
        """Write chunk ``chunk`` atomically: rows ``X`` (n, D) for ``clip_ids`` (n,).

        ``failures`` maps clip id -> reason for clips of this chunk that could not be embedded; they
        get no row and are listed in the consolidated sidecar.
        """
        arr = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if arr.ndim != 2 or arr.shape[0] != len(clip_ids):
            raise ValueError(f"chunk rows {arr.shape} disagree with {len(clip_ids)} clip ids")
        d = self.chunk_folder(name)
        meta = {
            "backend": backend,
            "version": version,
            "dim": int(arr.shape[1]),
            "clip_ids": [str(c) for c in clip_ids],
            "failures": dict(failures or {}),
        }
        # Rows first, then the sidecar: a chunk counts as done only when its .json exists.
        self.blobs.write(f"{d}/{chunk:06d}.npy", _npy_bytes(arr))
        self.blobs.write(f"{d}/{chunk:06d}.json", json.dumps(meta).encode("utf-8"))

    def done_chunks(self, name: str) -> list[int]:
        """Sorted indices of chunks written completely."""
        names = set(self.blobs.names(self.chunk_folder(name)))
        return sorted(
            int(n[:-5])
            for n in names
            if n.endswith(".json") and n[:-5].isdigit() and f"{n[:-5]}.npy" in names
        )

    def pending_chunks(self, name: str, n_chunks: int) -> list[int]:
        """Chunk indices in ``range(n_chunks)`` that are not written yet."""
        done = set(self.done_chunks(name))
        return [c for c in range(n_chunks) if c not in done]

    def iter_chunks(self, name: str) -> Iterator[tuple[int, Array, dict[str, Any]]]:
        d = self.chunk_folder(name)
        for c in self.done_chunks(name):
            meta = json.loads(self.blobs.read(f"{d}/{c:06d}.json").decode("utf-8"))
            yield c, np.load(io.BytesIO(self.blobs.read(f"{d}/{c:06d}.npy"))), meta

    def consolidate(self, name: str, *, remove_chunks: bool = True) -> FeatureSet:
        """Stack all written chunks (chunk order) into ``<name>.npy`` + sidecar and load it.

        Failures recorded by chunks are kept in the sidecar under ``"failures"``.

        Raises
        ------
        ValueError
            If no chunk exists or chunks disagree on backend, version or dimension.
        """
        chunks = list(self.iter_chunks(name))
        if not chunks:
            raise ValueError(f"{name}: no chunks to consolidate")
        first = chunks[0][2]
        for c, _, meta in chunks:
            for key in ("backend", "version", "dim"):
                if meta[key] != first[key]:
                    raise ValueError(
                        f"{name}: chunk {c} has {key}={meta[key]!r}, not {first[key]!r}"
                    )
        X = np.concatenate([x.reshape(-1, first["dim"]) for _, x, _ in chunks], axis=0)
        ids = [cid for _, _, meta in chunks for cid in meta["clip_ids"]]
        failures = {k: v for _, _, meta in chunks for k, v in meta.get("failures", {}).items()}
        self.write(
            name,
            X,
            ids,
            backend=first["backend"],
            version=first["version"],
            extra={"failures": failures, "n_chunks": len(chunks)},
        )
        if remove_chunks:
            self.blobs.delete_folder(self.chunk_folder(name))
        return self.load(name)
