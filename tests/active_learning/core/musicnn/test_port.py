"""The torch port against the original TensorFlow musicnn 0.1.0 outputs (carried in data/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from active_learning.core.musicnn.backend import PART_DIMS, MusicnnBackend
from active_learning.core.musicnn.model import Musicnn
from active_learning.core.musicnn.preprocess import (
    PATCH_FRAMES,
    TorchMel,
    logmel_librosa,
    make_patches,
)

from .conftest import MODELS, SIGNALS, assert_outputs_close, make_signal, signal_is_exact


def _numpy_outputs(o: object) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in o._asdict().items()}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def backends(musicnn_weights: Path) -> dict[str, MusicnnBackend]:
    return {m: MusicnnBackend(musicnn_weights, model=m) for m in MODELS}


@pytest.mark.parametrize(
    ("model", "fast"),
    [("MTT_musicnn", True), ("MSD_musicnn", True), ("MSD_musicnn", False)],
    ids=["MTT-fast", "MSD-fast", "MSD-literal"],
)
def test_network_on_reference_patches(musicnn_weights, reference, model, fast):
    net = Musicnn.from_checkpoint(musicnn_weights, model, fast=fast)
    for sig in SIGNALS:
        out = net(torch.from_numpy(reference[f"{sig}__mel_patches"]))
        assert_outputs_close(_numpy_outputs(out), reference, f"{model}__{sig}")


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("mel", ["torch", "librosa"])
def test_preprocessing_matches_reference_patches(reference, sig, mel):
    y = make_signal(sig)
    if not signal_is_exact(y, sig):
        pytest.skip("this libm regenerates the test signal differently; bit-level check skipped")
    logmel = TorchMel()(y).numpy() if mel == "torch" else logmel_librosa(y)
    patches = make_patches(logmel)
    assert patches.shape == (3, PATCH_FRAMES, 96)
    # Only log10 last-ulp differences between numpy versions; no float16 rounding flips.
    np.testing.assert_allclose(patches, reference[f"{sig}__mel_patches"], rtol=0, atol=2e-6)


@pytest.mark.parametrize("model", MODELS)
def test_end_to_end_from_signal(backends, reference, model):
    be = backends[model]
    for sig in SIGNALS:
        y = make_signal(sig)
        if not signal_is_exact(y, sig):
            pytest.skip("this libm regenerates the test signal differently")
        out = be.run_patches(be.patches(y, 16000))
        assert_outputs_close(_numpy_outputs(out), reference, f"{model}__{sig}")


def test_embedding_is_mean_of_patch_outputs(backends, reference):
    be = backends["MSD_musicnn"]
    y = make_signal("noisy")
    if not signal_is_exact(y, "noisy"):
        pytest.skip("this libm regenerates the test signal differently")
    emb = be.embed(y, 16000)
    assert emb.shape == (be.dim,) == (1706,)
    assert emb.dtype == np.float32
    key = "MSD_musicnn__noisy"
    expected = np.concatenate(
        [reference[f"{key}__{p}"].mean(0) for p in ("penultimate", "mean_pool", "max_pool")]
    )
    np.testing.assert_allclose(emb, expected, rtol=0, atol=3e-4)


def test_embed_many_batches_like_embed(backends):
    be = backends["MTT_musicnn"]
    rng = np.random.default_rng(0)
    clips = [
        (rng.standard_normal(22050 * 4).astype(np.float32) * 0.1, 22050),  # resampled, 1 patch
        (make_signal("clean")[:20000], 16000),  # 1.25 s: repeat-padded to one patch
        (make_signal("noisy"), 16000),  # 3 patches
    ]
    many = be.embed_many(clips)
    one = np.stack([be.embed(a, sr) for a, sr in clips])
    assert many.shape == (3, be.dim)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)
    assert be.embed_many([]).shape == (0, be.dim)


def test_parts_option(musicnn_weights):
    be = MusicnnBackend(musicnn_weights, model="MTT_musicnn", parts=("penultimate", "taggram"))
    assert be.dim == PART_DIMS["penultimate"] + PART_DIMS["taggram"] == 250
    assert be.name == "musicnn-MTT"
    assert be.version.startswith("0.1.0+torchport1")
    emb = be.embed(make_signal("clean")[:48000], 16000)
    assert emb.shape == (250,)
    assert np.all((emb[200:] > 0) & (emb[200:] < 1))
    with pytest.raises(ValueError):
        MusicnnBackend(musicnn_weights, parts=("nope",))


def test_short_clip_is_tiled_to_one_patch():
    logmel = np.arange(50 * 96, dtype=np.float32).reshape(50, 96)
    patches = make_patches(logmel)
    assert patches.shape == (1, PATCH_FRAMES, 96)
    np.testing.assert_array_equal(patches[0, 50:100], logmel)
    with pytest.raises(ValueError):
        make_patches(np.zeros((0, 96), np.float32))


def test_trailing_frames_dropped():
    logmel = np.random.default_rng(0).standard_normal((626, 96)).astype(np.float32)
    patches = make_patches(logmel)
    assert patches.shape == (3, PATCH_FRAMES, 96)
    np.testing.assert_array_equal(patches[2], logmel[374:561])
