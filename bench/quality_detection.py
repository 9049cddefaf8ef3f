"""Detection quality on the real corpus: typed label noise, out-of-sample probabilities, Refrain vs cleanlab.

For each seed: plant one typed error (wrong sibling, wrong branch, missing genre, extra genre) in 10 %
of the clips of ``../shared/data/corpus`` (labels from ``manifest.csv``, tree from ``taxonomy.json``),
compute 5-fold out-of-sample probabilities by training the project's own
``active_learning.core.models.HierarchicalClassifier`` on the *noisy* labels (features: the project's
``logmel-stats`` backend by default, or ``--features logmel-stats+musicnn-msd`` for log-mel statistics
concatenated with the musicnn MSD embedding; all from ``bench.corpus``'s feature cache under
``bench/.cache/``), then rank the clips with

- Refrain ``label_quality_scores``: ``refrain`` is the default (``method="calibrated"``: per-node Platt
  calibration of P(child | parent) against the given decisions, divided by the per-node
  confident-learning threshold, EMA ``alpha=0.99`` so the worst decision decides);
  ``refrain[calibrated,min]`` the same pooled by the minimum; ``refrain[self_confidence]`` the previous
  default (raw conditional self-confidence, EMA 0.8); ``refrain[normalized]`` that divided by the
  per-node threshold without calibration,
- cleanlab ``multilabel_classification.get_label_quality_scores`` on the same probabilities,
- cleanlab ``multilabel_classification.filter.find_label_issues(n_jobs=1,
  return_indices_ranked_by="self_confidence")``: its ranked flagged clips first, then the rest by
  cleanlab's quality score, so that it too gives a full ranking,

and report AUROC, average precision and precision at a budget equal to the true error count, overall
and per noise type (each type against the clean clips). Refrain's ``find_label_issues`` at that budget
is also checked for issue type and suspect node.

Run: ``.venv/bin/python -m bench.quality_detection [--features logmel-stats+musicnn-msd]`` (writes
``bench/results/quality_detection.json``; probabilities cached per seed and feature set in ``bench/.cache/``).

``--train-on true`` trains the out-of-sample model on the *true* labels and still scores the noisy ones:
a ceiling that separates what the errors cost the model from what the model cannot tell apart at all
(``bench/results/quality_detection_ceiling.json``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench import CACHE, RESULTS, write_json
from bench.corpus import corpus_labels, corpus_tree, load_feature_set, read_manifest
from bench.oos import oos_probs
from quality.core import find_label_issues, label_quality_scores
from quality.core.noise import NOISE_TYPES, inject_label_noise


def metrics(is_err: np.ndarray, suspicion: np.ndarray) -> dict[str, float]:
    """AUROC, AP and precision at budget = #errors for a ranking (higher suspicion = first)."""
    b = int(is_err.sum())
    top = np.argsort(-suspicion, kind="stable")[:b]
    return {
        "auroc": float(roc_auc_score(is_err, suspicion)),
        "ap": float(average_precision_score(is_err, suspicion)),
        "p_at_budget": float(is_err[top].mean()),
        "n_errors": b,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--noise-rate", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--hidden", type=int, default=0, help="HierarchicalClassifier hidden width")
    ap.add_argument(
        "--features",
        default="logmel-stats",
        help="logmel-stats, or backends joined by + (e.g. logmel-stats+musicnn-msd)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "quality_detection.json")
    ap.add_argument(
        "--probs-from",
        type=Path,
        default=None,
        help="folder of oos_seed<seed>.npz from bench.quality_oos_gpu (CNN / fusion probabilities "
        "computed on a GPU worker) instead of training here",
    )
    ap.add_argument("--probs-key", default="fusion", help="cnn, embedding or fusion")
    ap.add_argument(
        "--train-on",
        choices=("noisy", "true"),
        default="noisy",
        help="labels the out-of-sample model is trained on: the noisy ones (the real setting) or the "
        "true ones (a ceiling: the same model, uncorrupted by the errors it has to find)",
    )
    args = ap.parse_args()

    from cleanlab.multilabel_classification import get_label_quality_scores
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find

    rows = read_manifest()
    h = corpus_tree()
    true = corpus_labels(h, [row["labels"] for row in rows])
    x, feat_label = load_feature_set(args.features)
    load_at_start = os.getloadavg()
    print(f"corpus: N={true.shape[0]} K={h.n_nodes}; features {feat_label} {x.shape}")

    per_seed: list[dict[str, Any]] = []
    model_label = ""
    for seed in args.seeds:
        t0 = time.perf_counter()
        noisy, kinds = inject_label_noise(true, parents=h, noise_rate=args.noise_rate, seed=seed)
        is_err = kinds != ""
        strata = np.asarray([row["primary_label"] for row in rows])
        feat_tag = "" if args.features == "logmel-stats" else f"_{args.features}"
        if args.hidden:
            feat_tag += f"_hidden{args.hidden}"
        if args.train_on == "true":
            feat_tag += "_trueTrained"
        cache = CACHE / f"quality_detection_oos_seed{seed}_steps{args.max_steps}{feat_tag}.npz"
        if args.probs_from is not None:
            z = np.load(args.probs_from / f"oos_seed{seed}.npz")
            if not np.array_equal(z["noisy"], noisy):
                raise SystemExit(
                    f"{args.probs_from}: seed {seed} was computed on other noisy labels"
                )
            probs = h.make_consistent(np.clip(z[args.probs_key], 0.0, 1.0))
            model_label = (
                f"{args.probs_key} probabilities from bench.quality_oos_gpu (LogMelCNN on CQT "
                "patches / embedding MLP), 5-fold StratifiedKFold on the primary leaf"
            )
        elif cache.exists():
            z = np.load(cache)
            probs, model_label = z["probs"], str(z["model"])
        else:
            train_labels = noisy if args.train_on == "noisy" else true
            probs, model_label = oos_probs(
                x, train_labels, h, strata, seed=seed, max_steps=args.max_steps, hidden=args.hidden
            )
            if args.train_on == "true":
                model_label += (
                    " [ceiling: trained on the TRUE labels, scored against the noisy ones]"
                )
            np.savez(cache, probs=probs, model=model_label, noisy=noisy, kinds=kinds)
        fit_s = time.perf_counter() - t0
        labels_list = [np.flatnonzero(r).tolist() for r in noisy]
        cl_scores = get_label_quality_scores(labels_list, probs)
        cl_ranked = np.asarray(
            cl_find(labels_list, probs, n_jobs=1, return_indices_ranked_by="self_confidence")
        )
        rest = np.setdiff1d(np.arange(noisy.shape[0]), cl_ranked)
        order = np.r_[cl_ranked, rest[np.argsort(cl_scores[rest], kind="stable")]]
        cl_find_susp = np.empty(noisy.shape[0])
        cl_find_susp[order] = -np.arange(order.size, dtype=np.float64)

        t_score = time.perf_counter()
        refrain_default = label_quality_scores(noisy, probs, parents=h)
        score_s = time.perf_counter() - t_score
        rankers = {
            "refrain": -refrain_default,
            "refrain[calibrated,min]": -label_quality_scores(
                noisy, probs, parents=h, method="calibrated", pooling="min"
            ),
            "refrain[self_confidence]": -label_quality_scores(
                noisy, probs, parents=h, method="self_confidence"
            ),
            "refrain[normalized]": -label_quality_scores(
                noisy, probs, parents=h, method="normalized"
            ),
            "cleanlab.get_label_quality_scores": -cl_scores,
            "cleanlab.find_label_issues": cl_find_susp,
        }
        result: dict[str, Any] = {
            "seed": seed,
            "n_errors": int(is_err.sum()),
            "per_type_count": {t: int((kinds == t).sum()) for t in NOISE_TYPES},
            "model_fit_s": round(fit_s, 1),
            "refrain_score_s": round(score_s, 4),
            "top_level_accuracy_oos": float(
                np.mean(probs[:, h.roots].argmax(1) == true[:, h.roots].argmax(1))
            ),
            "cleanlab_find_flagged": int(cl_ranked.size),
            "rankers": {},
        }
        for name, susp in rankers.items():
            res = {"all": metrics(is_err, susp)}
            for t in NOISE_TYPES:
                m = (kinds == t) | ~is_err
                if (kinds == t).any():
                    res[t] = metrics(is_err[m], susp[m])
            result["rankers"][name] = res

        issues = find_label_issues(noisy, probs, parents=h, budget=int(is_err.sum()))
        hit = is_err[issues.clip]
        changed = noisy != true
        thr = find_label_issues(noisy, probs, parents=h)
        result["refrain_issues_at_budget"] = {
            "precision": float(hit.mean()),
            "type_accuracy_on_hits": float(
                (issues.issue_type[hit] == kinds[issues.clip[hit]]).mean()
            ),
            "type_accuracy_by_type": {
                t: float((issues.issue_type[hit & (kinds[issues.clip] == t)] == t).mean())
                for t in NOISE_TYPES
                if (hit & (kinds[issues.clip] == t)).any()
            },
            "suspect_node_changed_on_hits": float(
                changed[issues.clip[hit], issues.node[hit]].mean()
            ),
            "suggestion_restores_truth_on_hits": float(
                np.all(issues.suggested_labels[hit] == true[issues.clip[hit]], axis=1).mean()
            ),
        }
        result["refrain_threshold"] = {
            "flagged": len(thr),
            "precision": float(is_err[thr.clip].mean()) if len(thr) else 0.0,
            "recall": float(is_err[thr.clip].sum() / max(is_err.sum(), 1)),
        }
        per_seed.append(result)
        r, c = (
            result["rankers"]["refrain"]["all"],
            result["rankers"]["cleanlab.get_label_quality_scores"]["all"],
        )
        print(
            f"seed {seed}: errors {is_err.sum()}, fit {fit_s:.0f}s | refrain AP {r['ap']:.3f} "
            f"P@b {r['p_at_budget']:.3f} AUROC {r['auroc']:.3f} | cleanlab AP {c['ap']:.3f} "
            f"P@b {c['p_at_budget']:.3f} AUROC {c['auroc']:.3f}",
            flush=True,
        )

    summary: dict[str, Any] = {}
    for name in per_seed[0]["rankers"]:
        summary[name] = {}
        for part in ["all", *NOISE_TYPES]:
            vals = [s["rankers"][name][part] for s in per_seed if part in s["rankers"][name]]
            summary[name][part] = {
                key: {
                    "mean": round(float(np.mean([v[key] for v in vals])), 4),
                    "std": round(float(np.std([v[key] for v in vals])), 4),
                }
                for key in ("auroc", "ap", "p_at_budget")
            }
    ratio = {
        part: round(
            summary["refrain"][part]["ap"]["mean"]
            / summary["cleanlab.get_label_quality_scores"][part]["ap"]["mean"],
            3,
        )
        for part in ["all", *NOISE_TYPES]
    }
    print("\nmean over seeds", args.seeds)
    print(f"{'ranker':36s} {'part':14s} {'AUROC':>6s} {'AP':>6s} {'P@b':>6s}")
    for name, parts in summary.items():
        for part, m in parts.items():
            print(
                f"{name:36s} {part:14s} {m['auroc']['mean']:6.3f} {m['ap']['mean']:6.3f} {m['p_at_budget']['mean']:6.3f}"
            )
    print("AP ratio refrain / cleanlab.get_label_quality_scores:", ratio)
    payload = {
        "benchmark": "quality_detection",
        "data": {
            "corpus": "../shared/data/corpus (manifest.csv labels, taxonomy.json tree)",
            "n_clips": int(true.shape[0]),
            "n_nodes": int(h.n_nodes),
            "noise_rate": args.noise_rate,
            "noise": "quality.core.noise.inject_label_noise: one typed error per noisy clip, type "
            "uniform among those the clip is eligible for (missing_genre needs >= 2 paths)",
            "seeds": args.seeds,
        },
        "features": feat_label,
        "features_arg": args.features,
        "train_on": args.train_on,
        "model": model_label,
        "refrain_default": "label_quality_scores(method='calibrated', pooling='ema', alpha=0.99): "
        "per-node Platt calibration of P(child|parent) against the given decisions, divided by the "
        "per-node confident-learning threshold (capped at 1), worst decision first",
        "previous_default": "refrain[self_confidence] (conditional self-confidence, EMA alpha=0.8)",
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(v, 2) for v in load_at_start],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "note": "2 cores shared with other sessions' jobs; torch and numpy single-threaded",
        },
        "goal": {"ap_ratio_vs_cleanlab": 1.3, "p_at_budget": 0.8},
        "summary": summary,
        "ap_ratio_refrain_vs_cleanlab_scores": ratio,
        "per_seed": per_seed,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
