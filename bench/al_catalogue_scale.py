"""Catalogue-scale retrain: 100k clips x 200-d embeddings x the FMA genre tree, 5-fold OOS.

Usage: ``.venv/bin/python -m bench.al_catalogue_scale [--n 100000] [--repeats 3] [--threads 2]``

Synthetic embeddings carry a hierarchical signal (``synthetic_hierarchical_data``, seed 0) over the
real FMA tree (``../shared/data/fma/genres.csv``: genre_id, parent with 0 = root). One "retrain" is
what the worker does: 5 fold models + the full model with the default ``HierarchicalClassifier``,
out-of-sample probabilities for every clip, fold metrics. Goal: <= 60 s on this machine's 2 cores.
Writes ``bench/results/al_catalogue_scale.json`` (median over repeats, load average recorded: the
machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.models import (
    HierarchicalClassifier,
    auto_device,
    synthetic_hierarchical_data,
)
from bench import FMA, RESULTS, write_json
from bench.corpus import fma_tree
from taxonomy.hierarchy import Hierarchy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="conditional")
    ap.add_argument("--device", default=None, help="cpu / cuda (default: CUDA when available)")
    ap.add_argument("--genres", default=str(FMA))
    ap.add_argument("--out", default=str(RESULTS / "al_catalogue_scale.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parents = np.asarray(fma_tree(Path(args.genres)).parents, dtype=np.int64)
    device = auto_device(args.device)
    h = Hierarchy(parents)
    x, y, primary = synthetic_hierarchical_data(parents, args.n, args.d, seed=args.seed, signal=0.3)
    print(f"N={args.n} D={args.d} K={h.n_nodes} depth={h.max_depth + 1} threads={args.threads}")

    def factory() -> HierarchicalClassifier:
        return HierarchicalClassifier(
            parents,
            method=args.method,  # type: ignore[arg-type]
            seed=args.seed,
            device=device.type,
        )

    # Warm-up (first torch kernels / allocations), not timed: a worker process pays it once.
    factory().fit(x[:2000], y[:2000])
    runs = []
    for r in range(args.repeats):
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        res = cross_val_predict_proba(
            factory, x, y, parents=h, n_splits=5, seed=args.seed, primary=primary
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs.append(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "load_avg_1min_before": load,
                **{k: round(v, 3) for k, v in res.timings.items()},
                "oos_hier_f1": res.metrics["hier_f1"],
                "oos_mAP": res.metrics["mAP"],
                "oos_leaf_accuracy": res.metrics["leaf_accuracy"],
            }
        )
        print(f"run {r}: " + json.dumps({k: round(v, 3) for k, v in runs[-1].items()}), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out = {
        "n": args.n,
        "d": args.d,
        "k": h.n_nodes,
        "n_splits": 5,
        "threads": args.threads,
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "seed": args.seed,
        "estimator": factory().get_params() | {"parents": "fma genres.csv"},
        "goal_s": 60,
        "median": med,
        "runs": runs,
    }
    path = Path(args.out)
    write_json(path, out, indent=1, default=str)
    print(
        f"retrain + 5-fold OOS at {args.n}x{args.d}x{h.n_nodes}: median wall {med['wall_s']:.1f} s "
        f"(cpu {med['cpu_s']:.1f} s, load {med['load_avg_1min_before']:.1f}); "
        f"OOS hF1 {med['oos_hier_f1']:.3f}, mAP {med['oos_mAP']:.3f} -> {path}"
    )


if __name__ == "__main__":
    main()
