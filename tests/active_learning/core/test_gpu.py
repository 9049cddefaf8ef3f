"""The GPU training path: the same estimators on CUDA. Skipped where no GPU is present (CI).

Run on a GPU worker without Django (this file needs only numpy, torch and scikit-learn)::

    python -m pytest tests/active_learning/core/test_gpu.py --noconftest -o addopts="" -p no:django
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from active_learning.core.cnn import LogMelCNN
from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.metrics import leaf_accuracy
from active_learning.core.models import (
    HierarchicalClassifier,
    auto_device,
    synthetic_hierarchical_data,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

PARENTS = np.array([-1, -1, -1, 0, 0, 3, 3, 4, 4, 1, 1, 1], dtype=np.int64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    x, y, prim = synthetic_hierarchical_data(PARENTS, 800, 16, seed=7, signal=0.8, p_stop=0.0)
    xt, yt, pt = synthetic_hierarchical_data(
        PARENTS, 400, 16, seed=7, sample_seed=99, signal=0.8, p_stop=0.0
    )
    return x, y, prim, xt, yt, pt


def test_auto_device_picks_cuda() -> None:
    assert auto_device().type == "cuda"


@pytest.mark.parametrize("method", ["conditional", "flat"])
def test_classifier_on_cuda_matches_cpu(data: tuple[np.ndarray, ...], method: str) -> None:
    """Trained on CUDA (device chosen automatically), it learns as well as on CPU and its artifact
    is device-free: it unpickles and predicts on a CPU-only process."""
    x, y, _, xt, _, pt = data
    kw = {"method": method, "hidden": 32, "min_steps": 300, "max_steps": 300, "seed": 0}
    gpu = HierarchicalClassifier(PARENTS, **kw).fit(x, y)  # type: ignore[arg-type]
    cpu = HierarchicalClassifier(PARENTS, device="cpu", **kw).fit(x, y)  # type: ignore[arg-type]
    assert all(p.device.type == "cpu" for p in gpu.module_.parameters())
    pg, pc = gpu.predict_proba(xt), cpu.predict_proba(xt)
    has_par = PARENTS >= 0
    assert np.all(pg[:, has_par] <= pg[:, PARENTS[has_par]] + 1e-9)
    acc_g = leaf_accuracy(pg, pt, parents=PARENTS)
    acc_c = leaf_accuracy(pc, pt, parents=PARENTS)
    assert acc_g > 0.6 and abs(acc_g - acc_c) < 0.05, (acc_g, acc_c)
    restored = pickle.loads(pickle.dumps(gpu))
    restored.device = "cpu"
    np.testing.assert_allclose(restored.predict_proba(xt), pg, atol=1e-4)


def _patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 24, 32) patches: A/low = energy in low rows, A/high = high rows, B = flat noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 24, 32)).astype(np.float32)
    y = np.zeros((n, 4), dtype=np.int8)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            y[i] = [0, 1, 0, 0]
        elif kind == 1:
            x[i, 2:6] += 2.0
            y[i] = [1, 0, 1, 0]
        else:
            x[i, 18:22] += 2.0
            y[i] = [1, 0, 0, 1]
    return x, y


def test_cnn_trains_on_cuda_with_augmentation_and_cv() -> None:
    parents = np.array([-1, -1, 0, 0], dtype=np.int64)
    x, y = _patches(120, 0)
    xt, yt = _patches(60, 1)

    def make() -> LogMelCNN:
        return LogMelCNN(
            parents,
            n_mels=24,
            channels=(8, 16),
            crop_frames=24,
            freq_shift=1,
            batch_size=16,
            min_steps=150,
            max_steps=150,
        )

    clf = make().fit(x, y)
    assert all(p.device.type == "cpu" for p in clf.module_.parameters())
    p = clf.predict_proba(xt)
    truth = np.argmax(yt[:, 1:], axis=1)
    assert np.mean(np.argmax(p[:, 1:], axis=1) == truth) > 0.9
    res = cross_val_predict_proba(make, x, y, parents=parents, n_splits=3, seed=0)
    assert res.out_of_sample.all() and np.isfinite(res.pred_probs).all()
