"""Speed: Refrain's hierarchy-aware scoring + ranking vs cleanlab's multi-label detector, one run.

Synthetic labels and probabilities at N = 100,000 over the real FMA genre tree
(``../shared/data/fma/genres.csv``), 10 % typed label noise; probabilities stored as float32 (as the
project stores predictions; cleanlab gets the same float32 matrix). Timed side by side in one
process, the median of ``--repeats`` runs each, wall clock *and* process CPU time (the machine is
shared: wall time inflates with the load, CPU time much less), single-threaded numpy work, cleanlab
with ``n_jobs=1``:

- ``refrain.label_quality_scores+argpartition(budget)``: scores and the top of the ranking;
- ``refrain.label_quality_scores+argsort``: scores and the full ranking;
- ``refrain.find_label_issues(budget=10 % of N)``: scores, ranking and typed, explained issues;
- ``refrain.find_label_issues(threshold)``: the same with the confident-learning threshold;
- ``refrain[self_confidence]...``: the previous default method, for comparison;
- ``cleanlab.get_label_quality_scores`` and ``cleanlab.find_label_issues(n_jobs=1)``.

Run: ``.venv/bin/python -m bench.quality_speed`` (writes ``bench/results/quality_speed.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import RESULTS, write_json
from bench.corpus import fma_tree
from quality.core import find_label_issues, label_quality_scores
from quality.core.noise import inject_label_noise, random_paths, simulate_pred_probs


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], list[float], Any]:
    """(median wall s, wall runs, CPU runs, last output)."""
    times = []
    cpu = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        c0 = time.process_time()
        out = fn()
        cpu.append(time.process_time() - c0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "quality_speed.json")
    args = ap.parse_args()

    h = fma_tree()
    t0 = time.perf_counter()
    true = random_paths(args.n, parents=h, seed=args.seed, multi_label_rate=0.3, stop_rate=0.3)
    probs = simulate_pred_probs(true, parents=h, seed=args.seed + 1).astype(np.float32)
    noisy, kinds = inject_label_noise(true, parents=h, noise_rate=0.1, seed=args.seed + 2)
    setup_s = time.perf_counter() - t0
    n, k = noisy.shape
    is_err = kinds != ""
    labels_list = [np.flatnonzero(r).tolist() for r in noisy]  # cleanlab's multi-label input
    budget = n // 10
    print(f"N={n} K={k} (FMA tree), {int(is_err.sum())} planted errors; setup {setup_s:.1f} s")

    from cleanlab.multilabel_classification import get_label_quality_scores
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find

    def refrain_rank() -> np.ndarray:
        s = label_quality_scores(noisy, probs, parents=h)
        return np.argsort(s, kind="stable")

    def refrain_top() -> np.ndarray:
        s = label_quality_scores(noisy, probs, parents=h)
        top = np.argpartition(s, budget - 1)[:budget]
        return top[np.argsort(s[top], kind="stable")]

    cases: dict[str, Callable[[], Any]] = {
        "refrain.label_quality_scores+argpartition(budget)": refrain_top,
        "refrain.label_quality_scores+argsort": refrain_rank,
        "refrain.find_label_issues(budget=N/10)": lambda: find_label_issues(
            noisy, probs, parents=h, budget=budget
        ),
        "refrain.find_label_issues(threshold)": lambda: find_label_issues(noisy, probs, parents=h),
        "refrain[self_confidence].label_quality_scores+argsort": lambda: np.argsort(
            label_quality_scores(noisy, probs, parents=h, method="self_confidence"), kind="stable"
        ),
        "cleanlab.get_label_quality_scores+argsort": lambda: np.argsort(
            get_label_quality_scores(labels_list, probs), kind="stable"
        ),
        "cleanlab.find_label_issues(n_jobs=1)": lambda: cl_find(labels_list, probs, n_jobs=1),
    }
    results: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    load_start = os.getloadavg()
    for name, fn in cases.items():
        med, times, cpu, out = timed(fn, args.repeats)
        outputs[name] = out
        results[name] = {
            "median_s": round(med, 4),
            "runs_s": [round(t, 4) for t in times],
            "median_cpu_s": round(statistics.median(cpu), 4),
            "cpu_runs_s": [round(t, 4) for t in cpu],
        }
        print(
            f"{name:55s} median {med:7.3f} s (cpu {statistics.median(cpu):6.3f} s)  "
            f"runs {[round(t, 3) for t in times]}",
            flush=True,
        )

    # What each returned, for context (precision among the planted errors).
    flagged_cl = np.asarray(outputs["cleanlab.find_label_issues(n_jobs=1)"])
    thr = outputs["refrain.find_label_issues(threshold)"]
    top = outputs["refrain.find_label_issues(budget=N/10)"]
    cl_top = outputs["cleanlab.get_label_quality_scores+argsort"][:budget]
    sc_top = outputs["refrain[self_confidence].label_quality_scores+argsort"][:budget]
    context = {
        "cleanlab_find_label_issues_flagged_frac": round(float(flagged_cl.mean()), 4),
        "refrain_threshold_flagged_frac": round(len(thr) / n, 4),
        "refrain_precision_at_budget": round(float(is_err[top.clip].mean()), 4),
        "refrain_self_confidence_precision_at_budget": round(float(is_err[sc_top].mean()), 4),
        "cleanlab_scores_precision_at_budget": round(float(is_err[cl_top].mean()), 4),
    }
    print(json.dumps(context))
    speedup = (
        results["cleanlab.find_label_issues(n_jobs=1)"]["median_s"]
        / results["refrain.find_label_issues(budget=N/10)"]["median_s"]
    )
    print(
        f"refrain find_label_issues(budget) is {speedup:.1f}x faster than cleanlab find_label_issues"
    )
    payload = {
        "benchmark": "quality_speed",
        "data": {
            "tree": "../shared/data/fma/genres.csv",
            "n_clips": n,
            "n_nodes": k,
            "note": "K is every genre in genres.csv (163); labels/probabilities synthetic "
            "(quality.core.noise.random_paths / simulate_pred_probs), 10% typed noise; "
            "probabilities float32",
            "seed": args.seed,
            "budget": budget,
            "planted_errors": int(is_err.sum()),
        },
        "repeats": args.repeats,
        "timings": results,
        "speedup_refrain_budget_vs_cleanlab_find": round(speedup, 1),
        "context": context,
        "goal": "scoring + ranking <= 1 s at N=100k, K~161",
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "loadavg_start": [round(v, 2) for v in load_start],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "note": "2 cores shared with other sessions' jobs (see loadavg); cleanlab n_jobs=1; "
            "median_cpu_s is process CPU time, less sensitive to the load than wall time",
        },
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
