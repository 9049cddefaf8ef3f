"""Corpus benchmark for the end-to-end CNN (``LogMelCNN``) on CQT patches, on a GPU when one exists.

Usage::

    .venv/bin/python -m bench.corpus_patches            # once: bench/.cache/corpus_cqt.npz
    .venv/bin/python -m bench.al_corpus_cnn [--data bench/.cache/corpus_cqt.npz] [--seeds 0 1 2]

The data file is self-contained (patches, labels, splits, groups), so this script runs on a GPU
worker that has neither the corpus nor Django. If the file also holds ``E`` (embeddings from the
feature backends, see ``--add-embeddings`` of ``bench.corpus_patches``), the embedding MLP is trained
too and a late fusion (mean of the two models' hierarchy-consistent probabilities, which stays
hierarchy-consistent) is scored.

Protocol (mirrors ``bench.al_corpus``):

1. Model selection on the *train* split only: 5-fold CV grouped by ``source`` for each named
   configuration; the best mean CV leaf accuracy wins (ties: hierarchical F1). The decision
   threshold for hierarchical F1 is also chosen on the pooled out-of-sample train probabilities.
2. The winner is fitted on the whole train split with each seed and scored once on the test split;
   medians over seeds are reported with every seed's figures.

Writes ``bench/results/al_corpus_cnn.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from active_learning.core.cnn import LogMelCNN
from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.metrics import evaluate
from active_learning.core.models import HierarchicalClassifier, auto_device
from bench import CACHE, RESULTS, write_json
from bench.cnn_configs import COMMON, CONFIGS
from bench.corpus import load_patches
from taxonomy.hierarchy import Hierarchy

THRESHOLDS = [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def best_threshold(Y: np.ndarray, P: np.ndarray, h: Hierarchy) -> float:
    return max(THRESHOLDS, key=lambda t: evaluate(Y, P, parents=h, threshold=t)["hier_f1"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(CACHE / "corpus_cqt.npz"))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="override max_epochs (smoke runs)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "al_corpus_cnn.json"))
    args = ap.parse_args()

    d = load_patches(args.data)
    h = Hierarchy(d["parents"])
    X, Y, primary = d["X"], d["Y"].astype(np.int8), d["primary"]
    train, test = d["split"] == "train", d["split"] == "test"
    groups = d["source"]
    candidates = np.unique(primary)
    device = auto_device(args.device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"device {device} ({dev_name}); X {X.shape}; train {train.sum()} test {test.sum()}")

    def params(name: str, seed: int) -> dict[str, Any]:
        p = {**COMMON, **CONFIGS[name], "device": args.device, "seed": seed}
        if args.epochs is not None:
            p["max_epochs"] = args.epochs
        return p

    def cnn(name: str, seed: int) -> LogMelCNN:
        return LogMelCNN(h.parents, n_mels=X.shape[1], **params(name, seed))

    results: dict[str, Any] = {
        "device": f"{device.type}: {dev_name}",
        "torch": torch.__version__,
        "data": {"file": Path(args.data).name, "shape": list(X.shape)},
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "K": h.n_nodes,
        "common": COMMON,
        "cv": [],
    }
    Xtr, Ytr, Ptr, Gtr = X[train], Y[train], primary[train], groups[train]
    for name in args.configs:
        t0 = time.perf_counter()
        res = cross_val_predict_proba(
            lambda name=name: cnn(name, args.seeds[0]),
            Xtr,
            Ytr,
            parents=h,
            n_splits=5,
            seed=args.seeds[0],
            groups=Gtr,
            primary=Ptr,
            candidates=candidates,
            fit_full=False,
        )
        thr = best_threshold(Ytr, res.pred_probs, h)
        row = {
            "config": name,
            **{
                k: res.metrics[k] for k in ("leaf_accuracy", "hier_f1", "top_level_accuracy", "mAP")
            },
            "threshold": thr,
            "hier_f1_at_threshold": evaluate(Ytr, res.pred_probs, parents=h, threshold=thr)[
                "hier_f1"
            ],
            "cv_s": time.perf_counter() - t0,
        }
        results["cv"].append(row)
        print(
            "cv",
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )

    winner = max(results["cv"], key=lambda r: (r["leaf_accuracy"], r["hier_f1"]))
    results["selected"] = winner
    fusion = "E" in d
    per_seed = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        clf = cnn(winner["config"], seed).fit(Xtr, Ytr)
        fit_s = time.perf_counter() - t0
        P = clf.predict_proba(X[test])
        row: dict[str, Any] = {"seed": seed, "fit_s": fit_s}
        s = evaluate(Y[test], P, parents=h, primary=primary[test], candidates=candidates)
        s["hier_f1_at_threshold"] = evaluate(Y[test], P, parents=h, threshold=winner["threshold"])[
            "hier_f1"
        ]
        row["cnn"] = s
        if fusion:
            E = d["E"]
            emb = HierarchicalClassifier(
                h.parents,
                method="flat",
                hidden=256,
                weight_decay=1e-2,
                seed=seed,
                device=args.device,
            ).fit(E[train], Ytr)
            Pe = emb.predict_proba(E[test])
            row["embedding"] = evaluate(
                Y[test], Pe, parents=h, primary=primary[test], candidates=candidates
            )
            Pf = 0.5 * (P + Pe)
            row["fusion"] = evaluate(
                Y[test], Pf, parents=h, primary=primary[test], candidates=candidates
            )
            row["fusion"]["hier_f1_at_threshold"] = evaluate(
                Y[test], Pf, parents=h, threshold=winner["threshold"]
            )["hier_f1"]
        per_seed.append(row)
        print(
            "test",
            json.dumps(
                {
                    k: (round(v["leaf_accuracy"], 4), round(v["hier_f1"], 4))
                    if isinstance(v, dict)
                    else v
                    for k, v in row.items()
                }
            ),
            flush=True,
        )
    results["test_per_seed"] = per_seed
    summary = {}
    for model in ("cnn", "embedding", "fusion"):
        if model not in per_seed[0]:
            continue
        summary[model] = {
            k: statistics.median(r[model][k] for r in per_seed)
            for k in per_seed[0][model]
            if k != "n"
        }
    results["test_median"] = summary
    print(
        "median",
        json.dumps({m: {k: round(v, 4) for k, v in s.items()} for m, s in summary.items()}),
    )
    write_json(Path(args.out), results, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
