"""Learning curves and label savings of the acquisition strategies on ``../shared/data/corpus``.

Two experiments, every run with the same seed sets, batch size, model and hyper-parameters:

A. **Label savings** (annotators always right): hierarchical F1 on the test split against annotations
   spent for random, hierarchical uncertainty (entropy; margin), k-center diversity, BADGE and
   relabel-or-new. Savings = 1 - (annotations the strategy needs) / (annotations random needs) to
   reach random's final hierarchical F1, on the mean curves over seeds.
B. **Noisy annotators** (75 % accuracy, errors 75 % wrong-sibling / 25 % wrong-branch): relabel-or-new
   against the same ActiveLab ranking restricted to new clips ("always label new") and to labelled
   clips ("always relabel"), at the same budget.

Model: the project's ``HierarchicalClassifier`` (linear, conditional head, 100 AdamW steps, one torch
thread), on ``logmel-stats`` features (cached by ``bench.corpus``). Pool = the train split
(1,837 clips), curves on the test split (306 clips). Out-of-sample probabilities for labelled clips
(consensus, RelabelOrNew) come from 2-fold ``cross_val_predict_proba``.

Usage::

    .venv/bin/python -m bench.acq_simulate [--seeds 5] [--budget 320] [--batch 40] [--jobs 2]

Writes ``bench/results/acq_simulate.{json,md,html,png}`` (``--name`` sets the stem, ``--out`` the
folder); ``--replot NAME`` rewrites the md, html and png of ``bench/results/NAME.json`` without
simulating (for runs made on a machine without plotly or Chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from active_learning.core.acquisition import (
    AcquisitionStrategy,
    BadgeLike,
    DiversitySampling,
    HierarchicalUncertainty,
    RandomSampling,
    RelabelOrNew,
)
from bench import RESULTS
from bench.simulation import (
    AnnotatorModel,
    SimulationConfig,
    SimulationResult,
    label_savings,
    load_corpus_arrays,
    mean_curve,
    model_params,
    simulate_corpus,
)

STRATEGIES_A: dict[str, AcquisitionStrategy] = {
    "random": RandomSampling(),
    "uncertainty-entropy": HierarchicalUncertainty(),
    "uncertainty-margin": HierarchicalUncertainty(measure="margin"),
    "diversity-kcenter": DiversitySampling(method="kcenter"),
    "badge": BadgeLike(),
    "relabel_or_new": RelabelOrNew(),
}
STRATEGIES_B: dict[str, AcquisitionStrategy] = {
    "relabel_or_new": RelabelOrNew(),
    "always_new": RelabelOrNew(mode="new"),
    "always_relabel": RelabelOrNew(mode="relabel"),
    "relabel_or_new_votes": RelabelOrNew(),
    "relabel_or_new_votes_est": RelabelOrNew(),
    "relabel_or_new_gain": RelabelOrNew(rule="gain"),
}
#: SimulationConfig fields per experiment-B policy (default: the shared config).
CONFIG_B: dict[str, dict[str, Any]] = {
    "relabel_or_new_votes": {"relabel_quality": "votes", "estimate_weights": False},
    "relabel_or_new_votes_est": {"relabel_quality": "votes"},
}


def run_one(job: tuple[str, str, int, SimulationConfig]) -> dict[str, Any]:
    experiment, name, seed, cfg = job
    strategy = (STRATEGIES_A if experiment == "A" else STRATEGIES_B)[name]
    res = simulate_corpus(load_corpus_arrays(), strategy=strategy, config=cfg, seed=seed, name=name)
    print(
        f"[{experiment}] {name:20s} seed {seed}: final hF1 {res.metrics['hier_f1'][-1]:.3f} "
        f"({res.n_relabels[-1]} relabels, {res.seconds:.0f} s)",
        flush=True,
    )
    return {"experiment": experiment, **res.to_json()}


def summarise(runs: list[dict[str, Any]], experiment: str) -> dict[str, Any]:
    by: dict[str, list[SimulationResult]] = {}
    for r in runs:
        if r["experiment"] != experiment:
            continue
        by.setdefault(r["strategy"], []).append(
            SimulationResult(
                strategy=r["strategy"],
                seed=r["seed"],
                spent=np.asarray(r["spent"]),
                n_labelled=np.asarray(r["n_labelled"]),
                n_relabels=np.asarray(r["n_relabels"]),
                consensus_accuracy=np.asarray(r["consensus_accuracy"]),
                metrics={k: np.asarray(v) for k, v in r["metrics"].items()},
                seconds=r["seconds"],
            )
        )
    out: dict[str, Any] = {}
    rand = mean_curve(by["random"]) if "random" in by else None
    for name, res in by.items():
        spent, mean, std = mean_curve(res)
        finals = np.array([r.metrics["hier_f1"][-1] for r in res])
        row: dict[str, Any] = {
            "spent": spent.tolist(),
            "hier_f1_mean": mean.round(4).tolist(),
            "hier_f1_std": std.round(4).tolist(),
            "final_hier_f1": round(float(finals.mean()), 4),
            "final_hier_f1_std": round(float(finals.std()), 4),
            "final_hier_f1_per_1k_annotations": round(float(finals.mean()) / spent[-1] * 1000, 4),
            "auc_hier_f1": round(float(np.trapezoid(mean, spent) / (spent[-1] - spent[0])), 4),
            "final_leaf_accuracy": round(
                float(np.mean([r.metrics["leaf_accuracy"][-1] for r in res])), 4
            ),
            "final_relabels": round(float(np.mean([r.n_relabels[-1] for r in res])), 1),
            "final_consensus_accuracy": round(
                float(np.mean([r.consensus_accuracy[-1] for r in res])), 4
            ),
            "n_seeds": len(res),
        }
        if rand is not None:
            sav = label_savings(spent, mean, rand[0], rand[1])
            row["savings"] = {k: round(v, 4) if np.isfinite(v) else str(v) for k, v in sav.items()}
            # The same runs cut at smaller budgets (rounds do not depend on the budget, so a cut
            # curve is the curve a run with that budget would have drawn).
            row["savings_at"] = {}
            for cut in [c for c in spent.tolist()[:-1] if c % 400 == 0]:
                keep = spent <= cut
                s_cut = label_savings(spent[keep], mean[keep], rand[0][keep], rand[1][keep])
                row["savings_at"][str(cut)] = {
                    "target": round(s_cut["target"], 4),
                    "savings": round(s_cut["savings"], 4)
                    if np.isfinite(s_cut["savings"])
                    else str(s_cut["savings"]),
                }
        out[name] = row
    if "always_new" in by:
        # Seeds share the seed set and the annotators' answers: compare policies seed by seed.
        base = {r.seed: r.metrics["hier_f1"][-1] for r in by["always_new"]}
        for name, res in by.items():
            diff = np.array(
                [r.metrics["hier_f1"][-1] - base[r.seed] for r in res if r.seed in base]
            )
            if name != "always_new" and diff.size >= 2:
                out[name]["paired_vs_always_new"] = {
                    "mean": round(float(diff.mean()), 4),
                    "se": round(float(diff.std(ddof=1) / np.sqrt(diff.size)), 4),
                    "per_seed": diff.round(4).tolist(),
                }
    return out


def write_markdown(summary: dict[str, Any], setup: dict[str, Any], path: Path) -> None:
    model = {k: v for k, v in setup["model"].items() if k != "class"}
    where = setup.get("ran_on", "")
    lines = [
        "# Acquisition strategies on the rendered corpus",
        "",
        f"Pool: train split ({setup['pool']} clips); curves on the test split ({setup['test']} clips); "
        f"{setup['n_seeds']} seeds; seed set {setup['seed_size']}, batch {setup['batch']}, budget "
        f"{setup['budget']} annotations; model `HierarchicalClassifier` {model}; features "
        f"`{setup['feature_key']}`. Generated by `python -m bench.acq_simulate` in {setup['seconds']:.0f} s"
        + (f" on {where}." if where else "."),
        "",
        f"![learning curves]({path.with_suffix('.png').name})",
    ]
    if "A" in summary:
        cuts = list(next(iter(summary["A"].values())).get("savings_at", {}))
        lines += [
            "",
            "## A. Label savings (annotators always right)",
            "",
            "| strategy | final hF1 (mean ± sd) | AUC hF1 | annotations to reach random's final hF1 | savings vs random |"
            + "".join(f" savings at {cut} |" for cut in cuts),
            "|---|---|---|---|---|" + "---|" * len(cuts),
        ]
        for name, row in summary["A"].items():
            sav = row.get("savings", {})
            at = row.get("savings_at", {})
            lines.append(
                f"| {name} | {row['final_hier_f1']:.3f} ± {row['final_hier_f1_std']:.3f} | "
                f"{row['auc_hier_f1']:.3f} | {_num(sav.get('a_strategy', ''))} | "
                f"{_num(sav.get('savings', ''))} |"
                + "".join(f" {_num(at.get(cut, {}).get('savings', ''))} |" for cut in cuts)
            )
        if "random" in summary["A"]:
            lines += [
                "",
                f"Random's final hF1 (the target): {summary['A']['random']['final_hier_f1']:.3f}."
                + (
                    " Savings at a smaller budget: the same runs cut there, against random's hF1"
                    " at that budget."
                    if cuts
                    else ""
                ),
            ]
    if "B" in summary:
        lines += [
            "",
            "## B. Noisy annotators (75 % accuracy; errors 75 % sibling, 25 % branch)",
            "",
            "| policy | final hF1 (mean ± sd) | minus always_new, paired (mean ± se) | hF1 per 1k annotations | relabels spent | consensus accuracy of labelled clips |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in summary["B"].items():
            pair = row.get("paired_vs_always_new")
            lines.append(
                f"| {name} | {row['final_hier_f1']:.3f} ± {row['final_hier_f1_std']:.3f} | "
                + (f"{pair['mean']:+.3f} ± {pair['se']:.3f} | " if pair else "| ")
                + f"{row['final_hier_f1_per_1k_annotations']:.3f} | {row['final_relabels']:.0f} | "
                f"{row['final_consensus_accuracy']:.3f} |"
            )
        notes = setup.get("notes_B", "")
        if notes:
            lines += ["", notes]
    path.write_text("\n".join(lines) + "\n")


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def figure(summary: dict[str, Any]) -> Any:
    """Learning curves (mean ± sd over seeds), one panel per experiment in ``summary``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = {"A": "A. clean annotators", "B": "B. 75 % accurate annotators"}
    keys = [k for k in ("A", "B") if k in summary]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[titles[k] for k in keys])
    for col, key in enumerate(keys, start=1):
        for name, row in summary[key].items():
            fig.add_trace(
                go.Scatter(
                    x=row["spent"],
                    y=row["hier_f1_mean"],
                    name=f"{key}: {name}",
                    mode="lines+markers",
                    error_y={
                        "type": "data",
                        "array": row["hier_f1_std"],
                        "visible": True,
                        "thickness": 1,
                    },
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="annotations spent (relabels count)")
    fig.update_yaxes(title_text="hierarchical F1 (test split)")
    fig.update_layout(
        title="Learning curves: mean ± sd over seeds",
        height=520,
        width=620 * len(keys) + 180,
        template="plotly_white",
    )
    return fig


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # as tests/browser/conftest.py


def write_figure(summary: dict[str, Any], path: Path) -> None:
    """``path`` (.html, plotly.js from the CDN) and a .png beside it, readable offline.

    There is no kaleido here: the PNG is Debian's Chromium (``make browser-deps``) screenshotting a
    self-contained copy of the HTML through Playwright.
    """
    fig = figure(summary)
    fig.write_html(path, include_plotlyjs="cdn")
    png = path.with_suffix(".png")
    if not Path(CHROMIUM).exists():
        print(f"no PNG: {CHROMIUM} is not installed (make browser-deps)", file=sys.stderr)
        return
    import tempfile

    from playwright.sync_api import sync_playwright

    width, height = int(fig.layout.width), int(fig.layout.height)
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "figure.html"
        fig.write_html(page_path, include_plotlyjs=True, full_html=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
            )
            try:
                page = browser.new_page(
                    viewport={"width": width + 20, "height": height + 20}, device_scale_factor=2
                )
                page.goto(page_path.as_uri())
                page.wait_for_selector(".main-svg")
                page.locator(".plot-container").first.screenshot(path=str(png))
            finally:
                browser.close()


def replot(name: str) -> None:
    """Rewrite ``bench/results/NAME.{md,html,png}`` from ``NAME.json`` without simulating."""
    path = RESULTS / f"{name}.json"
    data = json.loads(path.read_text())
    summary = {k: summarise(data["runs"], k) for k in data["summary"]}
    if summary != data["summary"]:  # summaries this version adds (savings at smaller budgets)
        data["summary"] = summary
        path.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data["summary"], data["setup"], RESULTS / f"{name}.md")
    write_figure(data["summary"], RESULTS / f"{name}.html")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-size", type=int, default=40)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--budget", type=int, default=320)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--experiments", default="AB")
    ap.add_argument("--features", default="", help="backends joined by + (default logmel-stats)")
    ap.add_argument("--name", default="acq_simulate", help="results file stem")
    ap.add_argument("--max-steps", type=int, default=0, help="training steps (default 100)")
    ap.add_argument("--policies", default="", help="experiment-B policies, comma-separated")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--where", default="", help="machine the run is on, recorded in the JSON")
    ap.add_argument(
        "--replot", metavar="NAME", help="rewrite NAME.{md,html,png} from NAME.json; no simulation"
    )
    args = ap.parse_args()
    if args.replot:
        replot(args.replot)
        return
    if args.max_steps:
        os.environ["ACQ_MAX_STEPS"] = str(args.max_steps)
    if args.features:
        os.environ["ACQ_FEATURES"] = args.features

    t0 = time.perf_counter()
    data = load_corpus_arrays()
    cfg_a = SimulationConfig(
        seed_size=args.seed_size,
        batch_size=args.batch,
        budget=args.budget,
        annotators=AnnotatorModel(accuracy=1.0),
        cv_folds=2,
        max_annotations=5,
    )
    cfg_b = SimulationConfig(
        seed_size=args.seed_size,
        batch_size=args.batch,
        budget=args.budget,
        annotators=AnnotatorModel(accuracy=0.75, sibling_share=0.75, n_annotators=10),
        cv_folds=2,
        max_annotations=10,
    )
    jobs: list[tuple[str, str, int, SimulationConfig]] = []
    for seed in range(args.seeds):
        if "A" in args.experiments:
            jobs += [("A", name, seed, cfg_a) for name in STRATEGIES_A]
        if "B" in args.experiments:
            jobs += [
                ("B", name, seed, replace(cfg_b, **CONFIG_B.get(name, {})))
                for name in STRATEGIES_B
                if not args.policies or name in args.policies.split(",")
            ]
    # Slowest (cross-validated) jobs first so the pool drains evenly.
    jobs.sort(key=lambda j: j[0] != "B" and j[1] != "relabel_or_new")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, jobs))
    summary = {k: summarise(runs, k) for k in args.experiments}
    setup = {
        "pool": int((data["split"] == "train").sum()),
        "test": int((data["split"] == "test").sum()),
        "K": data["hier"].n_nodes,
        "n_seeds": args.seeds,
        "seed_size": args.seed_size,
        "batch": args.batch,
        "budget": args.budget,
        "model": {"class": "HierarchicalClassifier", **model_params()},
        "feature_key": data["feature_key"],
        "config_A": asdict(cfg_a),
        "config_B": asdict(cfg_b),
        "config_B_per_policy": {k: v for k, v in CONFIG_B.items() if k in STRATEGIES_B},
        "strategies_B": {k: repr(v) for k, v in STRATEGIES_B.items()},
        "seconds": time.perf_counter() - t0,
        "ran_on": f"{args.where or platform.node()}, {args.jobs} jobs on {os.cpu_count()} cores",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"setup": setup, "summary": summary, "runs": runs}, indent=1) + "\n"
    )
    write_markdown(summary, setup, args.out / f"{args.name}.md")
    try:
        write_figure(summary, args.out / f"{args.name}.html")
    except ImportError as exc:  # a bare compute box: replot here later with --replot NAME
        print(f"no figure ({exc}); the JSON is written", file=sys.stderr)
    print(
        json.dumps(
            {
                k: {
                    n: {
                        kk: v
                        for kk, v in r.items()
                        if kk in ("final_hier_f1", "savings", "final_relabels")
                    }
                    for n, r in s.items()
                }
                for k, s in summary.items()
            },
            indent=1,
        )
    )
    print(f"done in {setup['seconds']:.0f} s")


if __name__ == "__main__":
    main()
