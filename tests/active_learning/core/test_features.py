"""Decoding, backends and the feature store (all data written in tmp_path)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from active_learning.core.features import (
    AudioDecodeError,
    EmbeddingBackend,
    FeatureStore,
    LogMelStatsBackend,
    available_backends,
    decode_audio,
    get_backend,
    resample,
)


def _tone(sr: int = 22050, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_decode_stereo_downmix(tmp_path: Path) -> None:
    left, right = _tone(), np.zeros(22050, np.float32)
    sf.write(tmp_path / "a.wav", np.stack([left, right], 1), 22050)
    audio, sr = decode_audio(tmp_path / "a.wav")
    assert sr == 22050 and audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_allclose(audio, left / 2, atol=1e-4)


def test_decode_ogg(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.ogg", _tone(), 22050)
    audio, sr = decode_audio(tmp_path / "a.ogg")
    assert sr == 22050 and abs(audio.shape[0] - 22050) < 1024


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.wav", b"", "empty"),
        ("garbage.wav", b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3, "cannot decode"),
        ("text.ogg", b"hello, I am not an ogg file", "cannot decode"),
    ],
)
def test_decode_errors(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AudioDecodeError, match=reason):
        decode_audio(tmp_path / name)


def test_decode_truncated_and_zero_frames(tmp_path: Path) -> None:
    sf.write(tmp_path / "ok.flac", _tone(), 22050)
    data = (tmp_path / "ok.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:60])
    with pytest.raises(AudioDecodeError):
        decode_audio(tmp_path / "cut.flac")
    sf.write(tmp_path / "zero.wav", np.zeros((0,), np.float32), 22050)
    with pytest.raises(AudioDecodeError, match="zero samples"):
        decode_audio(tmp_path / "zero.wav")
    with pytest.raises(AudioDecodeError, match="no such file"):
        decode_audio(tmp_path / "missing.wav")


def test_resample() -> None:
    y = resample(_tone(44100), 44100, 22050)
    assert y.dtype == np.float32 and abs(y.shape[0] - 22050) <= 1
    x = _tone()
    assert resample(x, 22050, 22050) is x


def test_logmel_stats_backend() -> None:
    b = get_backend("logmel-stats")
    assert isinstance(b, EmbeddingBackend) and isinstance(b, LogMelStatsBackend)
    assert b.dim == 415
    e1 = b.embed(_tone(freq=440.0), 22050)
    e2 = b.embed(resample(_tone(freq=2000.0), 22050, 44100), 44100)
    assert e1.shape == (415,) and e1.dtype == np.float32 and np.isfinite(e1).all()
    assert not np.allclose(e1, e2)
    many = b.embed_many([(_tone(), 22050), (np.zeros(100, np.float32), 22050)])
    assert many.shape == (2, 415) and np.isfinite(many).all()
    np.testing.assert_allclose(many[0], e1, rtol=1e-5, atol=1e-5)


def test_registry() -> None:
    assert {"logmel-stats", "musicnn-msd", "musicnn-mtt", "torchscript"} <= set(
        available_backends()
    )
    with pytest.raises(KeyError, match="unknown embedding backend"):
        get_backend("nope")
    with pytest.raises(ValueError, match="path"):
        get_backend("torchscript")


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=1), x.abs().amax(dim=1), x.std(dim=1)], dim=1)


def test_torchscript_backend(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_Tiny()), str(path))
    b = get_backend("torchscript", path=str(path), sample_rate=16000)
    assert b.dim == 3 and b.version.startswith("sha256:")
    e = b.embed(_tone(), 22050)
    assert e.shape == (3,) and e[1] == pytest.approx(0.3, abs=0.02)
    assert b.embed_many([(_tone(), 22050)] * 2).shape == (2, 3)


class _Framed(torch.nn.Module):
    """Frames of 400 samples (hop 160) -> per-frame log energy and zero-crossing rate, pooled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.unfold(1, 400, 160)  # (1, T, 400)
        energy = torch.log1p((frames**2).mean(dim=2))
        zcr = (frames[:, :, 1:] * frames[:, :, :-1] < 0).float().mean(dim=2)
        return torch.stack([energy, zcr], dim=2).mean(dim=1)  # (1, 2)


def test_torch_export_backend_reads_a_pt2_archive_with_a_dynamic_sample_axis(
    tmp_path: Path,
) -> None:
    model = _Framed()
    samples = torch.export.Dim("samples", min=1024)
    program = torch.export.export(
        model, (torch.zeros(1, 16000),), dynamic_shapes={"x": {1: samples}}
    )
    path = tmp_path / "framed.pt2"
    torch.export.save(program, path)

    b = get_backend("torch-export", path=str(path), sample_rate=16000)
    assert b.name == "torch-export" and b.dim == 2 and b.version.startswith("sha256:")
    tone = _tone()  # 2 s at 22.05 kHz: another length than the export's example
    e = b.embed(tone, 22050)
    with torch.no_grad():
        want = model(torch.from_numpy(resample(tone, 22050, 16000)).reshape(1, -1))[0].numpy()
    np.testing.assert_allclose(e, want, rtol=1e-5, atol=1e-6)
    assert b.embed_many([(tone, 22050), (tone[:30000], 22050)]).shape == (2, 2)


def test_torch_export_with_a_static_sample_axis_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(_Framed(), (torch.zeros(1, 8000),)), path)
    with pytest.raises(ValueError, match="sample axis dynamic"):
        get_backend("torch-export", path=str(path), sample_rate=16000)


def test_store_round_trip(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    store.write("s", x, [f"c{i}" for i in range(7)], backend="b", version="1")
    fs = store.load("s")
    np.testing.assert_array_equal(fs.X, x)
    assert isinstance(fs.X, np.memmap) and fs.backend == "b" and fs.version == "1"
    assert fs.clip_ids[3] == "c3" and fs.rows_for(["c5", "c0"]).tolist() == [5, 0]
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["dim"] == 5 and meta["n"] == 7


def test_store_chunks_resume_and_consolidate(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    rng = np.random.default_rng(1)
    chunks = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    ids = [[f"c{c}_{i}" for i in range(3)] for c in range(4)]
    # First run "dies" after chunks 0 and 2; a half-written chunk leaves only a temp file.
    for c in (0, 2):
        store.write_chunk("s", c, chunks[c], ids[c], backend="b", version="1")
    (store.chunk_dir("s") / ".000001.npy.x.tmp").write_bytes(b"partial")
    assert store.pending_chunks("s", 4) == [1, 3]
    for c in store.pending_chunks("s", 4):
        store.write_chunk(
            "s",
            c,
            chunks[c][:2],
            ids[c][:2],
            backend="b",
            version="1",
            failures={ids[c][2]: "cannot decode"},
        )
    fs = store.consolidate("s")
    expected = np.concatenate([chunks[0], chunks[1][:2], chunks[2], chunks[3][:2]])
    np.testing.assert_array_equal(fs.X, expected)
    assert fs.clip_ids == ids[0] + ids[1][:2] + ids[2] + ids[3][:2]
    assert fs.meta["failures"] == {"c1_2": "cannot decode", "c3_2": "cannot decode"}
    assert not store.chunk_dir("s").exists()


def test_store_rejects_mixed_backends(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.write_chunk("s", 0, np.zeros((1, 2)), ["a"], backend="b", version="1")
    store.write_chunk("s", 1, np.zeros((1, 2)), ["b"], backend="b", version="2")
    with pytest.raises(ValueError, match="version"):
        store.consolidate("s")


def test_store_load_is_fast(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    n = 100_000
    x = np.ones((n, 64), dtype=np.float32)
    store.write("big", x, [str(i) for i in range(n)], backend="b", version="1")
    t0 = time.perf_counter()
    fs = store.load("big")
    assert fs.X.shape == (n, 64)
    assert time.perf_counter() - t0 < 1.0


def test_combined_backend_concatenates_its_parts() -> None:
    from active_learning.core.features import ConcatBackend

    sr = 22050
    t = np.arange(2 * sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    both = get_backend("logmel-stats+structure-stats", **{"logmel-stats": {"n_mels": 32}})
    assert isinstance(both, ConcatBackend)
    a, b = get_backend("logmel-stats", n_mels=32), get_backend("structure-stats")
    assert both.name == "logmel-stats+structure-stats" and both.dim == a.dim + b.dim
    assert both.version == f"{a.version}+{b.version}"
    np.testing.assert_allclose(both.embed(y, sr), np.concatenate([a.embed(y, sr), b.embed(y, sr)]))
    assert both.embed_many([(y, sr), (y, sr)]).shape == (2, both.dim)
    with pytest.raises(KeyError, match="unknown embedding backend 'nope'"):
        get_backend("logmel-stats+nope")
