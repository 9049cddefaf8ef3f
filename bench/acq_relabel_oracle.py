"""Upper bound on what second opinions can buy in experiment B of ``bench.acq_simulate``.

An oracle policy with perfect targeting: every round it asks another opinion on each labelled clip
whose votes do not yet show the truth by strict majority on every node (up to the batch), and
spends the rest of the batch as "always label new" does. No real policy targets better, so if this
one does not beat always_new by more than the noise, no relabel-or-new rule can on this setup.

Same setup as ``acq_simulate_800`` (features ``logmel-stats+musicnn-msd+structure-stats``, seed set
80, batch 80, budget 800, 75 %-accurate annotators, 5 seeds); the always_new runs to compare with are
read from ``bench/results/acq_simulate_800.json``.

Usage::

    .venv/bin/python -m bench.acq_relabel_oracle [--jobs 2]

Writes ``bench/results/acq_relabel_oracle.json`` (``_BUDGET`` appended for other budgets;
``--reference`` names the results file holding the always_new runs of that budget).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ACQ_FEATURES", "logmel-stats+musicnn-msd+structure-stats")

import numpy as np

from active_learning.core.acquisition import RelabelOrNew, RelabelOrNewSelection
from bench import RESULTS, write_json
from bench.simulation import (
    AnnotatorModel,
    SimulationConfig,
    load_corpus_arrays,
    simulate_corpus,
)


@dataclass
class OracleRelabel(RelabelOrNew):
    """Relabel exactly the clips whose votes do not show ``truth`` yet; the rest as mode="new"."""

    truth: Any = None

    def select_detailed(self, **kw: Any) -> RelabelOrNewSelection:
        counts = kw.pop("label_counts", None)
        new = RelabelOrNew(mode="new").select_detailed(**kw)
        if counts is None or kw["pred_probs"] is None:
            return new
        n_ann = np.asarray(kw["n_annotations"])
        shown = np.all((counts * 2 > n_ann[:, None]) == (self.truth > 0), axis=1)
        bad = np.flatnonzero((n_ann > 0) & ~shown & (n_ann < self.max_annotations))[: kw["n"]]
        rest = new.indices[~np.isin(new.indices, bad)][: kw["n"] - bad.size]
        idx = np.concatenate([bad, rest]).astype(np.int64)
        return RelabelOrNewSelection(idx, n_ann[idx] > 0, np.zeros(idx.size))


def run_one(job: tuple[int, int]) -> dict[str, Any]:
    seed, budget = job
    data = load_corpus_arrays()
    tr = np.flatnonzero(data["split"] == "train")
    cfg = SimulationConfig(
        seed_size=80,
        batch_size=80,
        budget=budget,
        annotators=AnnotatorModel(accuracy=0.75, sibling_share=0.75, n_annotators=10),
        cv_folds=2,
        max_annotations=10,
        relabel_quality="votes",  # only so that the simulation hands over the vote counts
    )
    res = simulate_corpus(
        data,
        strategy=OracleRelabel(truth=data["y"][tr]),
        config=cfg,
        seed=seed,
        name="oracle_relabel",
    )
    print(
        f"seed {seed}: final hF1 {res.metrics['hier_f1'][-1]:.3f} ({res.n_relabels[-1]} relabels)",
        flush=True,
    )
    return res.to_json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--budget", type=int, default=800)
    ap.add_argument(
        "--reference", default="acq_simulate_800", help="results file with the always_new runs"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, [(seed, args.budget) for seed in range(args.seeds)]))
    ref = json.loads((RESULTS / f"{args.reference}.json").read_text())
    base = {
        r["seed"]: r["metrics"]["hier_f1"][-1]
        for r in ref["runs"]
        if r["experiment"] == "B" and r["strategy"] == "always_new"
    }
    finals = np.array([r["metrics"]["hier_f1"][-1] for r in runs])
    diff = np.array(
        [r["metrics"]["hier_f1"][-1] - base[r["seed"]] for r in runs if r["seed"] in base]
    )
    summary = {
        "budget": args.budget,
        "reference": args.reference,
        "final_hier_f1": round(float(finals.mean()), 4),
        "final_hier_f1_std": round(float(finals.std()), 4),
        "final_relabels": float(np.mean([r["n_relabels"][-1] for r in runs])),
        "final_consensus_accuracy": round(
            float(np.mean([r["consensus_accuracy"][-1] for r in runs])), 4
        ),
        "paired_vs_always_new": {
            "mean": round(float(diff.mean()), 4),
            "se": round(float(diff.std(ddof=1) / np.sqrt(diff.size)), 4),
            "per_seed": diff.round(4).tolist(),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    stem = "acq_relabel_oracle" + ("" if args.budget == 800 else f"_{args.budget}")
    write_json(RESULTS / f"{stem}.json", {"summary": summary, "runs": runs}, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
