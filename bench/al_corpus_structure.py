"""Corpus benchmark for the ``structure-stats`` backend, alone and concatenated with the others.

Usage::

    .venv/bin/python -m bench.al_corpus_structure [--seed 0] [--workers 2]

1. Extracts ``structure-stats`` for every clip of ``../shared/data/corpus`` with a ``--workers``
   process pool (one thread each; decode + resample + embed), caches it under
   ``bench/.cache/features/corpus-structure-stats`` and records throughput (clip-seconds per
   process-CPU-second and per wall-second). The other backends' features come from the existing cache
   (``bench.corpus``).
2. Same protocol as ``bench.al_corpus``: for each feature set, 5-fold CV on the *train* split,
   group-aware by ``source``, over method (conditional / flat) x hidden (0 / 256) x weight decay 1e-2;
   the best mean CV leaf accuracy wins (ties: hierarchical F1); the winner is fit on the whole train
   split and scored once on the test split. Nothing is tuned on test.

Writes ``bench/results/al_corpus_structure.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import itertools
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import torch

from active_learning.core.cv import cross_val_predict_proba
from active_learning.core.features import (
    AudioDecodeError,
    FeatureStore,
    decode_audio,
    get_backend,
)
from active_learning.core.metrics import evaluate
from active_learning.core.models import HierarchicalClassifier
from bench import CORPUS, RESULTS, write_json
from bench.corpus import FEATURE_CACHE, features, load_corpus
from taxonomy.hierarchy import Hierarchy

NAME = "structure-stats"


def _embed_part(paths: list[str]) -> tuple[np.ndarray, list[bool], float, float]:
    torch.set_num_threads(1)
    backend = get_backend(NAME)
    backend.embed(np.zeros(22050, dtype=np.float32), 22050)
    rows, ok = [], []
    audio_s = 0.0
    c0 = time.process_time()
    for rel in paths:
        try:
            audio, sr = decode_audio(CORPUS / rel)
        except AudioDecodeError:
            ok.append(False)
            continue
        rows.append(backend.embed(audio, sr))
        ok.append(True)
        audio_s += audio.shape[0] / sr
    X = np.stack(rows) if rows else np.zeros((0, backend.dim), np.float32)
    return X, ok, audio_s, time.process_time() - c0


def extract_structure(workers: int) -> dict[str, Any]:
    store = FeatureStore(FEATURE_CACHE)
    set_name = f"corpus-{NAME}"
    if store.exists(set_name):
        return dict(store.load(set_name).meta.get("throughput", {}))
    manifest = pd.read_csv(CORPUS / "manifest.csv")
    ids, paths = list(manifest.clip_id), list(manifest.path)
    chunk = 64
    parts = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    w0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(_embed_part, parts))
    wall = time.perf_counter() - w0
    X = np.concatenate([r[0] for r in results])
    ok = [b for r in results for b in r[1]]
    kept = [c for c, good in zip(ids, ok, strict=True) if good]
    audio_s = sum(r[2] for r in results)
    cpu_s = sum(r[3] for r in results)
    backend = get_backend(NAME)
    tp = {
        "audio_s": audio_s,
        "cpu_s": cpu_s,
        "wall_s": wall,
        "workers": workers,
        "clip_s_per_core_s": audio_s / max(cpu_s, 1e-9),
        "clip_s_per_wall_s": audio_s / max(wall, 1e-9),
        "ms_per_10s_clip_per_core": 1000.0 * cpu_s / max(len(kept), 1),
    }
    failures = {c: "decode" for c, good in zip(ids, ok, strict=True) if not good}
    store.write(
        set_name,
        X,
        kept,
        backend=backend.name,
        version=backend.version,
        extra={"throughput": tp, "failures": failures},
    )
    return tp


def run_backend(
    X: np.ndarray,
    Y: np.ndarray,
    primary: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    h: Hierarchy,
    seed: int,
) -> dict[str, Any]:
    candidates = np.unique(primary)
    Xtr, Ytr, Ptr, Gtr = X[train], Y[train], primary[train], groups[train]
    grid = list(itertools.product(["conditional", "flat"], [0, 256], [1e-2]))
    cv_table = []
    for method, hidden, wd in grid:

        def factory(method: str = method, hidden: int = hidden, wd: float = wd) -> Any:
            return HierarchicalClassifier(
                h.parents,
                method=method,  # type: ignore[arg-type]
                hidden=hidden,
                weight_decay=wd,
                seed=seed,
            )

        res = cross_val_predict_proba(
            factory,
            Xtr,
            Ytr,
            parents=h,
            n_splits=5,
            seed=seed,
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
                k: res.metrics[k] for k in ("leaf_accuracy", "hier_f1", "top_level_accuracy", "mAP")
            },
            "cv_s": res.timings["total_s"],
        }
        cv_table.append(row)
        print(
            "  cv",
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    winner = max(cv_table, key=lambda r: (r["leaf_accuracy"], r["hier_f1"]))
    t0 = time.perf_counter()
    clf = HierarchicalClassifier(
        h.parents,
        method=winner["method"],
        hidden=winner["hidden"],
        weight_decay=winner["weight_decay"],
        seed=seed,
    ).fit(Xtr, Ytr)
    fit_s = time.perf_counter() - t0
    P = clf.predict_proba(X[test])
    scores = evaluate(Y[test], P, parents=h, primary=primary[test], candidates=candidates)
    scores["path_hier_f1"] = evaluate(Y[test], P, parents=h, mode="path")["hier_f1"]
    scores["fit_s"] = fit_s
    print("  test", json.dumps({k: round(v, 4) for k, v in scores.items()}), flush=True)
    return {
        "dim": int(X.shape[1]),
        "cv_grid_train_split": cv_table,
        "selected": winner,
        "test_selected": scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--backends",
        nargs="+",
        default=[
            NAME,
            f"logmel-stats+{NAME}",
            f"musicnn-msd+{NAME}",
            f"logmel-stats+musicnn-msd+{NAME}",
        ],
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tp = extract_structure(args.workers)
    print("extraction", json.dumps(tp), flush=True)
    torch.set_num_threads(args.workers)

    manifest, h, Y, primary = load_corpus()
    clip_ids = list(manifest["clip_id"])
    train = (manifest["split"] == "train").to_numpy()
    test = (manifest["split"] == "test").to_numpy()
    groups = manifest["source"].to_numpy()
    results: dict[str, Any] = {
        "seed": args.seed,
        "torch_threads": args.workers,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "protocol": "bench.al_corpus: 5-fold source-grouped CV on train selects the config; "
        "winner fit on train, scored once on test",
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "K": h.n_nodes,
        "structure_extraction": tp,
        "structure_blocks": {
            k: [v.start, v.stop]
            for k, v in get_backend(NAME).blocks.items()  # type: ignore[attr-defined]
        },
        "backends": {},
    }
    out = RESULTS / "al_corpus_structure.json"
    for backend in args.backends:
        X, tps = features(backend, clip_ids)
        print(f"\n== {backend}: D={X.shape[1]}", flush=True)
        r = run_backend(X, Y, primary, groups, train, test, h, args.seed)
        r["extraction"] = tps
        results["backends"][backend] = r
        write_json(out, results, indent=1, default=float)
    print("\nheadline (test split, config selected by train-split CV):")
    for b, r in results["backends"].items():
        t = r["test_selected"]
        print(
            f"  {b:45s} leaf={t['leaf_accuracy']:.3f} hF1={t['hier_f1']:.3f} "
            f"top={t['top_level_accuracy']:.3f} [{r['selected']['method']}, h={r['selected']['hidden']}]"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
