"""Corpus benchmark: extraction throughput, training + 5-fold CV time, test-split quality.

Usage::

    .venv/bin/python -m bench.al_corpus [--backends logmel-stats musicnn-msd ...] [--seed 0]

Reads ``../shared/data/corpus`` (manifest.csv + taxonomy.json). Features are extracted once per
backend (single-threaded, see ``bench.corpus.extract``) and cached under ``bench/.cache/``.

Protocol (seed fixed, everything tuned on the *train* split only):

1. Model selection: 5-fold CV on the train split, group-aware by ``source`` (movements of one work
   stay together), over method (conditional / flat) x hidden layer (0 / 256) x weight decay;
   the configuration with the best mean CV leaf accuracy wins (ties: hierarchical F1).
2. Fit the winner on the whole train split, score on the test split (leaf and top-level accuracy
   on ``primary_label``, hierarchical P/R/F1 with threshold 0.5, per-depth macro F1, mAP).
   The best configuration *of the other method* is scored too, for the method comparison.
3. Timing: one full train + 5-fold out-of-sample CV of the winner on the train split.

Writes ``bench/results/al_corpus.json``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.metrics import evaluate
from active_learning.core.models import HierarchicalClassifier
from bench import RESULTS, write_json
from bench.corpus import features, load_corpus


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    return (row["leaf_accuracy"], row["hier_f1"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["logmel-stats", "musicnn-msd", "logmel-stats+musicnn-msd"],
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    manifest, h, Y, primary = load_corpus()
    clip_ids = list(manifest["clip_id"])
    train = (manifest["split"] == "train").to_numpy()
    test = (manifest["split"] == "test").to_numpy()
    candidates = np.unique(primary)
    groups = manifest["source"].to_numpy()

    grid = list(itertools.product(["conditional", "flat"], [0, 256], [1e-2]))
    results: dict[str, Any] = {
        "seed": args.seed,
        "torch_threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "K": h.n_nodes,
        "backends": {},
    }
    for backend in args.backends:
        try:
            X, tps = features(backend, clip_ids)
        except Exception as exc:  # a backend that is not available is reported, not fatal
            print(f"{backend}: skipped ({exc})", flush=True)
            results["backends"][backend] = {"skipped": str(exc)}
            continue
        Xtr, Ytr, Ptr, Gtr = X[train], Y[train], primary[train], groups[train]
        print(f"\n== {backend}: D={X.shape[1]}", flush=True)

        cv_table = []
        for method, hidden, wd in grid:

            def factory(method: str = method, hidden: int = hidden, wd: float = wd) -> Any:
                return HierarchicalClassifier(
                    h.parents,
                    method=method,
                    hidden=hidden,
                    weight_decay=wd,
                    seed=args.seed,  # type: ignore[arg-type]
                )

            res = cross_val_predict_proba(
                factory,
                Xtr,
                Ytr,
                parents=h,
                n_splits=5,
                seed=args.seed,
                groups=Gtr,
                primary=Ptr,
                candidates=candidates,
                fit_full=False,
            )
            row = {
                "method": method,
                "hidden": hidden,
                "weight_decay": wd,
                **{
                    k: res.metrics[k]
                    for k in ("leaf_accuracy", "hier_f1", "top_level_accuracy", "mAP")
                },
                "cv_s": res.timings["total_s"],
            }
            cv_table.append(row)
            print(
                "  cv",
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )

        def best_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return max(rows, key=_rank)

        winner = best_of(cv_table)
        by_method = {
            m: best_of([r for r in cv_table if r["method"] == m]) for m in ("conditional", "flat")
        }
        test_scores = {}
        for m, cfg in by_method.items():
            t0 = time.perf_counter()
            clf = HierarchicalClassifier(
                h.parents,
                method=m,
                hidden=cfg["hidden"],
                weight_decay=cfg["weight_decay"],  # type: ignore[arg-type]
                seed=args.seed,
            ).fit(Xtr, Ytr)
            fit_s = time.perf_counter() - t0
            P = clf.predict_proba(X[test])
            scores = evaluate(Y[test], P, parents=h, primary=primary[test], candidates=candidates)
            scores["path_hier_f1"] = evaluate(Y[test], P, parents=h, mode="path")["hier_f1"]
            scores["fit_s"] = fit_s
            test_scores[m] = {"config": cfg, "test": scores}
            print(
                f"  test[{m}]", json.dumps({k: round(v, 4) for k, v in scores.items()}), flush=True
            )

        # Timing: one train + 5-fold out-of-sample CV of the winner (train split, plain folds).
        win_factory = functools.partial(
            HierarchicalClassifier,
            h.parents,
            method=winner["method"],
            hidden=winner["hidden"],
            weight_decay=winner["weight_decay"],
            seed=args.seed,
        )

        t0, c0 = time.perf_counter(), time.process_time()
        res = cross_val_predict_proba(
            win_factory, Xtr, Ytr, parents=h, n_splits=5, seed=args.seed, fit_full=True
        )
        timing = {
            "train_plus_5fold_wall_s": time.perf_counter() - t0,
            "train_plus_5fold_cpu_s": time.process_time() - c0,
            **res.timings,
        }
        print("  timing", json.dumps({k: round(v, 2) for k, v in timing.items()}), flush=True)
        results["backends"][backend] = {
            "dim": int(X.shape[1]),
            "extraction": tps,
            "cv_grid_train_split": cv_table,
            "selected": winner,
            "test": test_scores,
            "test_selected": test_scores[winner["method"]]["test"],
            "timing": timing,
        }
    out = RESULTS / "al_corpus.json"
    write_json(out, results, indent=1, default=float)
    print("\nheadline (test split, selected config by train-split CV):")
    for b, r in results["backends"].items():
        if "test_selected" in r:
            t = r["test_selected"]
            print(
                f"  {b:40s} leaf_acc={t['leaf_accuracy']:.3f} hier_f1={t['hier_f1']:.3f} "
                f"top={t['top_level_accuracy']:.3f} mAP={t['mAP']:.3f} "
                f"[{r['selected']['method']}, hidden={r['selected']['hidden']}, wd={r['selected']['weight_decay']}]"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
