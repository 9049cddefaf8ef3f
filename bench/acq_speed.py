"""Acquisition speed: every strategy over 100k unlabelled clips x 200-d cached embeddings, FMA tree.

Setup: the FMA genre tree from ``../shared/data/fma/genres.csv`` (K nodes), 100,000 unlabelled plus
1,000 labelled clips (and again with 10,000: the diversity samplers measure against every labelled clip), 200-d float32 embeddings (clustered, as real embeddings are), hierarchy-consistent
probabilities drawn from a synthetic model, batch of n = 100 picks. Each strategy runs ``--repeats``
times (median reported) with the model, and ``--repeats`` times in cold start (no model; diversity
only, with the labelled clips as centres). Goal: <= 2 s. The machine is shared: the 1-minute load
average is recorded for the whole run and for each row (the time window of that row's repeats).
``--baseline REV`` also times ``acquisition.py`` as of git revision REV, in the same process with the
same seeds, interleaved repeat by repeat with the working tree, and records whether the picks agree.
It loads the single-file module of REV (so REV predates the split into
``active_learning/core/acquisition/``), its imports resolved against the working tree, with the
modules moved since (``active_learning.core.hierarchy`` -> ``taxonomy.hierarchy``) aliased while it
loads. To compare with a revision from after the split, run the benchmark at each revision and
compare ratios.

Usage::

    .venv/bin/python -m bench.acq_speed [--repeats 5] [--n-labelled 1000 10000] [--baseline HEAD~1]

Writes ``bench/results/acq_speed.json``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from active_learning.core import acquisition
from bench import RESULTS, ROOT, write_json
from bench.corpus import fma_tree
from taxonomy.hierarchy import Hierarchy


def synthetic_pool(
    hier: Hierarchy, *, n: int, d: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings (n, d) float32, probabilities (n, K), true leaf (n,) from a planted model."""
    rng = np.random.default_rng(seed)
    leaves = np.flatnonzero(hier.is_leaf)
    leaf = rng.choice(leaves, size=n)
    centres = rng.normal(0, 1, size=(hier.n_nodes, d)).astype(np.float32)
    emb = centres[leaf] + rng.normal(0, 1.5, size=(n, d)).astype(np.float32)
    # Logits: truth path plus noise, squashed per node and made consistent (children <= parent).
    anc = hier.ancestor_matrix[leaf].astype(np.float32)
    logits = 3.0 * anc - 1.5 + rng.normal(0, 1.5, size=(n, hier.n_nodes)).astype(np.float32)
    probs = hier.make_consistent(1.0 / (1.0 + np.exp(-logits)))
    return emb, probs, leaf


def load_baseline(rev: str) -> tuple[types.ModuleType, str]:
    """``active_learning/core/acquisition.py`` as of git revision ``rev``, as a separate module."""
    path = "active_learning/core/acquisition.py"
    commit = git("rev-parse", "--short", rev)
    module = types.ModuleType("acquisition_baseline")
    module.__file__ = f"{commit}:{path}"
    sys.modules[module.__name__] = module  # dataclasses look their module up while being defined
    # Modules the old file imports that have moved since: alias them while it loads.
    moved = {"active_learning.core.hierarchy": "taxonomy.hierarchy"}
    added = [old for old in moved if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(moved[old])
    try:
        exec(compile(git("show", f"{commit}:{path}"), module.__file__, "exec"), module.__dict__)
    finally:
        for old in added:
            del sys.modules[old]
    return module, commit


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def strategies(acq: types.ModuleType) -> dict[str, Any]:
    return {
        "random": acq.RandomSampling(),
        "uncertainty-entropy": acq.HierarchicalUncertainty(),
        "uncertainty-margin": acq.HierarchicalUncertainty(measure="margin"),
        "diversity-kcenter": acq.DiversitySampling(method="kcenter"),
        "diversity-kmeans++": acq.DiversitySampling(method="kmeans++"),
        "badge-gradient": acq.BadgeLike(),
        "badge-scaled": acq.BadgeLike(embedding="scaled"),
        "relabel_or_new": acq.RelabelOrNew(),
    }


def timing(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-unlabelled", type=int, default=100_000)
    ap.add_argument("--n-labelled", type=int, nargs="+", default=[1_000, 10_000])
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also time acquisition.py as of this git revision, interleaved with the working tree",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "acq_speed.json")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    hier = fma_tree()
    versions = {"new": strategies(acquisition)}
    baseline_commit = None
    if args.baseline:
        old, baseline_commit = load_baseline(args.baseline)
        versions["baseline"] = strategies(old)
    results = []
    for n_labelled in args.n_labelled:
        n_total = args.n_unlabelled + n_labelled
        emb, probs, _ = synthetic_pool(hier, n=n_total, d=args.dim, seed=0)
        rng = np.random.default_rng(1)
        labeled = np.zeros(n_total, dtype=bool)
        labeled[rng.choice(n_total, size=n_labelled, replace=False)] = True
        quality = np.where(labeled, rng.uniform(0.5, 1.0, n_total), np.nan)
        n_ann = labeled.astype(np.int64) + (labeled & (rng.uniform(size=n_total) < 0.2))
        for name in versions["new"]:
            for cold in (False, True):
                if cold and name.startswith(("random", "diversity")):
                    continue
                times: dict[str, list[float]] = {v: [] for v in versions}
                picks: dict[str, list[list[int]]] = {v: [] for v in versions}
                load_row = os.getloadavg()[0]
                for r in range(args.repeats):
                    # Interleaved, alternating which goes first: both see the same machine load.
                    order = list(versions) if r % 2 == 0 else list(versions)[::-1]
                    for version in order:
                        t0 = time.perf_counter()
                        got = versions[version][name].select(
                            pred_probs=None if cold else probs,
                            embeddings=emb,
                            labeled=labeled,
                            n=args.batch,
                            parents=hier,
                            consensus_quality=quality,
                            n_annotations=n_ann,
                            rng=np.random.default_rng(r),
                        )
                        times[version].append(time.perf_counter() - t0)
                        assert got.shape == (args.batch,)
                        picks[version].append(got.tolist())
                row: dict[str, Any] = {
                    "strategy": name,
                    "cold_start": cold,
                    "n_labelled": n_labelled,
                    **timing(times["new"]),
                    "repeats": args.repeats,
                    "meets_goal_2s": statistics.median(times["new"]) <= 2.0,
                    "load_average_1min": [load_row, os.getloadavg()[0]],
                }
                line = (
                    f"{n_labelled:6d} labelled  {name:22s} {'cold' if cold else 'model':5s} "
                    f"median {row['median_s']:.3f} s (min {row['min_s']:.3f}, max {row['max_s']:.3f})"
                )
                if baseline_commit:
                    # Same seed per repeat: equal picks where the strategy is deterministic under it.
                    same = picks["new"] == picks["baseline"]
                    row["baseline"] = {**timing(times["baseline"]), "same_picks": same}
                    line += f"  baseline {row['baseline']['median_s']:.3f} s, same picks {same}"
                results.append(row)
                print(f"{line}  load {load_row:.2f}", flush=True)
        del emb, probs
    out = {
        "setup": {
            "n_unlabelled": args.n_unlabelled,
            "n_labelled": args.n_labelled,
            "dim": args.dim,
            "K": hier.n_nodes,
            "max_depth": hier.max_depth,
            "batch": args.batch,
            "embeddings_dtype": "float32",
            "baseline": None if baseline_commit is None else f"acquisition.py at {baseline_commit}",
            "machine": f"{platform.machine()}, {platform.python_version()}, shared 2-core CPU",
            "load_average_1min": [load_before, os.getloadavg()[0]],
        },
        "results": results,
    }
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
