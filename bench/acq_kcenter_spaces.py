"""Does k-center save more labels in another embedding space? Experiment A of ``bench.acq_simulate``, k-center
only, with the embedding it measures distances in changed.

The project's default diversity space is the z-scored feature matrix. With combined backends
(``logmel-stats+musicnn-msd+structure-stats``: 415 + 1706 + 447 dims) musicnn's dims dominate every
distance, so the question is whether balancing the blocks or reducing the space helps. Spaces:

- ``z``: z-scored features (the default; reproduces ``acq_simulate_1600``'s k-center row exactly);
- ``block``: z-scored, each backend's block divided by sqrt(its width), so each block weighs the same;
- ``pca-K``: the first K principal components of the z-scored features (``pca-Kw``: whitened).

Same seeds, seed set, batch, budget, model and annotators as ``acq_simulate_1600``; savings against
that run's random curve (random does not look at the embedding, so its curve is the same).

Usage::

    .venv/bin/python -m bench.acq_kcenter_spaces [--spaces z block pca-64 pca-64w] [--seeds 5]

Writes ``bench/results/acq_kcenter_spaces.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from active_learning.core.acquisition import DiversitySampling
from bench import RESULTS, write_json
from bench.simulation import (
    AnnotatorModel,
    SimulationConfig,
    label_savings,
    load_corpus_arrays,
    simulate_corpus,
)

FEATURES = "logmel-stats+musicnn-msd+structure-stats"
BLOCKS = (415, 1706, 447)  # logmel-stats, musicnn-msd, structure-stats
REFERENCE = RESULTS / "acq_simulate_1600.json"


def space(name: str, x: np.ndarray) -> np.ndarray:
    """(N, D) features -> (N, E) float32 embedding named ``name`` (see the module doc)."""
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    if name == "z":
        return z.astype(np.float32)
    if name == "block":
        if sum(BLOCKS) != z.shape[1]:
            raise ValueError(f"blocks {BLOCKS} do not add up to D={z.shape[1]}")
        cuts = np.cumsum((0, *BLOCKS))
        parts = [z[:, a:b] / np.sqrt(b - a) for a, b in itertools.pairwise(cuts)]
        return np.concatenate(parts, axis=1).astype(np.float32)
    if name.startswith("pca-"):
        k = int(name[4:].rstrip("w"))
        u, sv, _ = np.linalg.svd(z - z.mean(0), full_matrices=False)
        return (u[:, :k] * (1.0 if name.endswith("w") else sv[:k])).astype(np.float32)
    raise ValueError(f"unknown space {name!r}")


def run(job: tuple[str, int, int]) -> dict[str, Any]:
    name, seed, budget = job
    data = load_corpus_arrays()
    cfg = SimulationConfig(
        seed_size=80,
        batch_size=80,
        budget=budget,
        annotators=AnnotatorModel(accuracy=1.0, sibling_share=0.75, n_annotators=10),
        cv_folds=2,
        max_annotations=5,
    )
    tr = np.flatnonzero(data["split"] == "train")
    res = simulate_corpus(
        data,
        strategy=DiversitySampling(method="kcenter"),
        config=cfg,
        seed=seed,
        name=f"kcenter[{name}]",
        embeddings=space(name, data["x"][tr].astype(np.float64)),
    )
    return {
        "space": name,
        "seed": seed,
        "spent": res.spent.tolist(),
        "hier_f1": res.metrics["hier_f1"].tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", nargs="+", default=["z", "block", "pca-64", "pca-64w"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    os.environ["ACQ_FEATURES"] = FEATURES
    ref = json.loads(REFERENCE.read_text())
    budget = int(ref["setup"]["budget"])
    rand = ref["summary"]["A"]["random"]
    r_spent, r_mean = np.asarray(rand["spent"]), np.asarray(rand["hier_f1_mean"])
    t0 = time.perf_counter()
    jobs = [(s, seed, budget) for s in args.spaces for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, jobs))
    summary: dict[str, Any] = {}
    for name in args.spaces:
        mine = [r for r in runs if r["space"] == name]
        spent = np.asarray(mine[0]["spent"])
        mean = np.mean([r["hier_f1"] for r in mine], axis=0)
        finals = np.array([r["hier_f1"][-1] for r in mine])
        row: dict[str, Any] = {
            "final_hier_f1": round(float(finals.mean()), 4),
            "final_hier_f1_std": round(float(finals.std()), 4),
            "hier_f1_mean": mean.round(4).tolist(),
            "spent": spent.tolist(),
        }
        for cut in (800, 1200, budget):
            keep = spent <= cut
            s = label_savings(spent[keep], mean[keep], r_spent[keep], r_mean[keep])["savings"]
            row[f"savings_at_{cut}"] = round(float(s), 4) if np.isfinite(s) else str(s)
        summary[name] = row
        print(
            f"{name:8s} final hF1 {row['final_hier_f1']:.3f} +- {row['final_hier_f1_std']:.3f} | "
            f"savings at 800 {row['savings_at_800']}, 1200 {row['savings_at_1200']}, "
            f"{budget} {row[f'savings_at_{budget}']}",
            flush=True,
        )
    out = RESULTS / "acq_kcenter_spaces.json"
    write_json(
        out,
        {
            "benchmark": "acq_kcenter_spaces",
            "features": FEATURES,
            "reference": "acq_simulate_1600 (setup, and its random curve as the baseline)",
            "n_seeds": args.seeds,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{os.cpu_count()} cores (shared), {args.jobs} jobs",
            "summary": summary,
            "runs": runs,
        },
        indent=1,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
