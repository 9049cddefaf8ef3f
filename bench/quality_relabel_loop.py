"""One routed relabel round on the corpus: error rate before/after, Refrain ranking vs random routing.

Simulation (per seed): every clip of ``../shared/data/corpus`` is labelled once by one of 8 simulated
annotators of 75 % accuracy; a wrong label set is one typed error drawn with a bias toward siblings
(wrong_sibling 0.55, wrong_branch 0.15, extra_genre 0.15, missing_genre 0.15, falling back to a sibling
swap where the clip is not eligible). Out-of-sample probabilities come from the project's model trained
on those labels (5-fold, as in ``bench.quality_detection``). A budget of 10 % of the clips is routed
to a *different* annotator (same 75 % accuracy) for a blind second opinion, either the top of Refrain's
``label_quality_scores`` ranking (the default ``calibrated`` method; the previous default
``self_confidence`` for comparison) or a random sample of the same size; the original and the new
opinion are then combined by ``quality.core.consensus.get_consensus``, with the model's weight
estimated on all labelled clips (``model_weight_from="all"``, the default) or, as CROWDLAB does, only
on the multi-annotated clips (``"overlap"``: here exactly the routed clips, where the model disagreed
with the first label). Every clip's potential second opinion is drawn once per seed (common random
numbers), so the routing strategies differ only in which clips they route. Reported: the clip-level
label error rate (label set != truth) before and after, for

- ``routed_only``: consensus on the routed clips, the original label elsewhere (what a project stores
  after one round), and
- ``consensus_everywhere``: the consensus on every clip (single-annotated clips too, where the model
  can overrule a weak lone label).

Run: ``.venv/bin/python -m bench.quality_relabel_loop`` (writes ``bench/results/quality_relabel_loop.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from bench import CACHE, RESULTS, write_json
from bench.corpus import corpus_labels, corpus_tree, load_feature_set, read_manifest
from bench.oos import oos_probs
from quality.core import label_quality_scores
from quality.core.consensus import Annotations, get_consensus
from quality.core.noise import inject_label_noise
from taxonomy.hierarchy import Hierarchy

ERROR_MIX = {
    "wrong_sibling": 0.55,
    "wrong_branch": 0.15,
    "extra_genre": 0.15,
    "missing_genre": 0.15,
}
N_ANNOTATORS = 8


def annotate(
    h: Hierarchy, true: np.ndarray, clips: np.ndarray, accuracy: float, rng: np.random.Generator
) -> np.ndarray:
    """Label sets of a simulated annotator for ``clips``: (len(clips), K) int8."""
    out = true[clips].copy()
    kinds = list(ERROR_MIX)
    probs = np.asarray(list(ERROR_MIX.values()))
    for j, n in enumerate(clips):
        if rng.random() < accuracy:
            continue
        for kind in [kinds[rng.choice(len(kinds), p=probs)], "wrong_sibling", "wrong_branch"]:
            noisy, kind_out = inject_label_noise(
                true[n : n + 1],
                parents=h,
                noise_rate=1.0,
                types=[kind],
                seed=int(rng.integers(1 << 31)),
            )
            if kind_out[0]:
                out[j] = noisy[0]
                break
    return out


def error_rate(labels: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.any(labels != true, axis=1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--accuracy", type=float, default=0.75)
    ap.add_argument(
        "--initial-accuracy",
        type=float,
        default=None,
        help="accuracy of the labels before the round (default: --accuracy); 0.9 = the 10 %% "
        "typed-noise setting of bench/quality_detection.py, relabelled by --accuracy annotators",
    )
    ap.add_argument("--budget-frac", type=float, default=0.10)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--features", default="logmel-stats")
    ap.add_argument("--out", type=Path, default=RESULTS / "quality_relabel_loop.json")
    args = ap.parse_args()

    rows = read_manifest()
    h = corpus_tree()
    true = corpus_labels(h, [r["labels"] for r in rows])
    x, feat_label = load_feature_set(args.features)
    load_start = os.getloadavg()
    n = true.shape[0]
    budget = round(args.budget_frac * n)
    strata = np.asarray([r["primary_label"] for r in rows])
    per_seed: list[dict[str, Any]] = []
    model_label = ""
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        first_ann = rng.integers(N_ANNOTATORS, size=n)
        initial = args.accuracy if args.initial_accuracy is None else args.initial_accuracy
        given = annotate(h, true, np.arange(n), initial, rng)
        feat_tag = "" if args.features == "logmel-stats" else f"_{args.features}"
        if args.initial_accuracy is not None:
            feat_tag += f"_init{args.initial_accuracy}"
        cache = CACHE / f"quality_relabel_oos_seed{seed}_steps{args.max_steps}{feat_tag}.npz"
        if cache.exists() and np.array_equal(np.load(cache)["given"], given):
            probs, model_label = np.load(cache)["probs"], str(np.load(cache)["model"])
        else:
            probs, model_label = oos_probs(x, given, h, strata, seed=seed, max_steps=args.max_steps)
            np.savez(cache, probs=probs, given=given, model=model_label)
        before = error_rate(given, true)
        # One potential blind second opinion per clip, from a different annotator.
        rng2 = np.random.default_rng(2000 + seed)
        second_ann_all = (first_ann + rng2.integers(1, N_ANNOTATORS, size=n)) % N_ANNOTATORS
        second_all = annotate(h, true, np.arange(n), args.accuracy, rng2)
        routes = {
            "refrain": np.argsort(label_quality_scores(given, probs, parents=h), kind="stable")[
                :budget
            ],
            "refrain[self_confidence]": np.argsort(
                label_quality_scores(given, probs, parents=h, method="self_confidence"),
                kind="stable",
            )[:budget],
            "random": rng2.choice(n, size=budget, replace=False),
        }
        # How often the model's own top-down label set (P(child | parent) >= 1/2) is exactly right:
        # the ceiling on letting it overrule a lone annotator.
        cond = h.conditional(probs)
        own = cond >= 0.5
        for node in h.order:
            if h.parents[node] >= 0:
                own[:, node] &= own[:, h.parents[node]]
        result: dict[str, Any] = {
            "seed": seed,
            "error_rate_before": round(before, 4),
            "model_own_label_set_error_rate": round(error_rate(own.astype(np.int8), true), 4),
            "top_level_accuracy_oos": round(
                float(np.mean(probs[:, h.roots].argmax(1) == true[:, h.roots].argmax(1))), 4
            ),
        }
        records = [(int(i), int(first_ann[i]), given[i]) for i in range(n)]
        for name, routed in routes.items():
            recs = records + [(int(c), int(second_ann_all[c]), second_all[c]) for c in routed]
            ann = Annotations.from_records(recs, n_clips=n, n_annotators=N_ANNOTATORS)
            wrong_routed = np.any(given[routed] != true[routed], axis=1)
            result[name] = {
                "routed_with_error": int(wrong_routed.sum()),
                # if the round fixed every routed error and broke nothing
                "ceiling_error_rate_after": round(before - float(wrong_routed.sum()) / n, 4),
            }
            for mode in ("all", "overlap"):
                res = get_consensus(ann, probs, parents=h, model_weight_from=mode)
                routed_only = given.copy()
                routed_only[routed] = res.consensus_labels[routed]
                now_wrong = np.any(routed_only[routed] != true[routed], axis=1)
                result[name][mode] = {
                    "error_rate_after_routed_only": round(error_rate(routed_only, true), 4),
                    "error_rate_after_consensus_everywhere": round(
                        error_rate(res.consensus_labels, true), 4
                    ),
                    "routed_fixed": int((wrong_routed & ~now_wrong).sum()),
                    "routed_broken": int((~wrong_routed & now_wrong).sum()),
                    "model_weight": round(res.model_weight, 4),
                    "annotator_weight_mean": round(float(np.mean(res.annotator_weight)), 4),
                }
        per_seed.append(result)
        print(
            f"seed {seed}: before {before:.3f} | "
            + " | ".join(
                f"{name} routed {result[name]['routed_with_error']}/{budget} wrong -> "
                f"{result[name]['all']['error_rate_after_routed_only']:.3f} "
                f"(CROWDLAB overlap weight: {result[name]['overlap']['error_rate_after_routed_only']:.3f})"
                for name in routes
            ),
            flush=True,
        )

    def mean(path: tuple[str, ...]) -> float:
        vals = []
        for s in per_seed:
            v: Any = s
            for p in path:
                v = v[p]
            vals.append(v)
        return round(float(np.mean(vals)), 4)

    summary: dict[str, Any] = {
        "error_rate_before": mean(("error_rate_before",)),
        "model_own_label_set_error_rate": mean(("model_own_label_set_error_rate",)),
    }
    for name in ("refrain", "refrain[self_confidence]", "random"):
        summary[f"{name}.routed_with_error"] = mean((name, "routed_with_error"))
        summary[f"{name}.ceiling_error_rate_after"] = mean((name, "ceiling_error_rate_after"))
        for mode in ("all", "overlap"):
            for key in (
                "error_rate_after_routed_only",
                "error_rate_after_consensus_everywhere",
                "routed_fixed",
                "routed_broken",
                "model_weight",
            ):
                summary[f"{name}.{mode}.{key}"] = mean((name, mode, key))
    print(json.dumps(summary, indent=1))
    payload = {
        "benchmark": "quality_relabel_loop",
        "setup": {
            "corpus": "../shared/data/corpus",
            "n_clips": n,
            "annotators": N_ANNOTATORS,
            "accuracy": args.accuracy,
            "initial_accuracy": args.accuracy
            if args.initial_accuracy is None
            else args.initial_accuracy,
            "error_mix": ERROR_MIX,
            "budget": budget,
            "seeds": args.seeds,
            "features": feat_label,
            "model": model_label,
            "consensus_modes": {
                "all": "model weight from the model's disagreement with every annotation on all "
                "labelled clips, corrected for the annotators' pairwise-disagreement error (new default)",
                "overlap": "CROWDLAB: model weight from its error against the consensus of "
                "multi-annotated clips only (the previous behaviour)",
            },
            "note": "one annotation per clip before the round; a budget of 10% of clips can remove at "
            "most 10 points of clip error by relabelling alone",
            "command": "python -m bench.quality_relabel_loop " + " ".join(sys.argv[1:]),
            "goal": "error rate at least halves after one routed round",
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_start": [round(v, 2) for v in load_start],
                "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            },
        },
        "summary": summary,
        "per_seed": per_seed,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
