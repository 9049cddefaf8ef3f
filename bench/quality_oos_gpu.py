"""Out-of-sample probabilities on noisy corpus labels from the CNN (and its fusion with the embedding
model), for ``python -m bench.quality_detection --probs-from``. Meant for a GPU worker.

Usage::

    python -m bench.quality_oos_gpu [--data bench/.cache/corpus_cqt.npz] [--seeds 0 1 2] --out DIR

For each seed: the same typed label noise as ``bench.quality_detection`` (10 %,
``quality.core.noise.inject_label_noise(seed=seed)``), then 5-fold out-of-sample probabilities
(StratifiedKFold on the primary leaf, ``random_state=seed``) from ``LogMelCNN`` on the CQT patches
(the ``cnn`` model kind's configuration) and from the embedding MLP on ``E``; writes
``DIR/oos_seed<seed>.npz`` with ``noisy``, ``kinds``, ``cnn``, ``embedding``, ``fusion`` (the mean).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from active_learning.core.cnn import LogMelCNN
from active_learning.core.models import HierarchicalClassifier
from bench import CACHE
from bench.cnn_configs import COMMON, CONFIGS
from bench.corpus import load_patches
from quality.core.noise import inject_label_noise
from taxonomy.hierarchy import Hierarchy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(CACHE / "corpus_cqt.npz"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--noise-rate", type=float, default=0.1)
    ap.add_argument("--config", default="base-shift3")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = load_patches(args.data)
    h = Hierarchy(d["parents"])
    X, E, true, primary = d["X"], d["E"], d["Y"].astype(np.int8), d["primary"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        t0 = time.perf_counter()
        noisy, kinds = inject_label_noise(true, parents=h, noise_rate=args.noise_rate, seed=seed)
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(X, primary)
        p_cnn = np.zeros(true.shape)
        p_emb = np.zeros(true.shape)
        for tr, te in folds:
            cnn = LogMelCNN(
                h.parents, n_mels=X.shape[1], seed=seed, **{**COMMON, **CONFIGS[args.config]}
            )
            p_cnn[te] = cnn.fit(X[tr], noisy[tr]).predict_proba(X[te])
            mlp = HierarchicalClassifier(
                h.parents, method="flat", hidden=256, weight_decay=1e-2, seed=seed
            )
            p_emb[te] = mlp.fit(E[tr], noisy[tr]).predict_proba(E[te])
        np.savez(
            out / f"oos_seed{seed}.npz",
            noisy=noisy,
            kinds=kinds,
            cnn=p_cnn,
            embedding=p_emb,
            fusion=0.5 * (p_cnn + p_emb),
        )
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
