"""The Django/Celery ML pipeline on the real corpus: extraction through the tasks, then training.

    .venv/bin/python -m bench.ml_pipeline [--backends logmel-stats,musicnn-msd] [--limit 0]

In a scratch PostgreSQL database (``refrain_bench_ml``, dropped afterwards) and a Redis db of its
own (5): import ``../shared/data/corpus/manifest.csv`` with labels on the *train* split only, start a
real local worker (``-Q default,cpu,gpu -c 2``), then per backend

* ``extract_features_for_project`` via ``send_task(...).get()`` (the chunk chord; wall-clock, so
  worker start-up per process, first-chunk backend build and broker round trips are included);
* ``train_project_model`` (5-fold out-of-sample probabilities for the labelled train clips, the full
  model for the rest), wall-clock;
* test-split quality: the full model's probabilities for the (unlabelled) test clips against the
  manifest labels, with ``active_learning.core.metrics.evaluate``.

Writes ``bench/results/ml_pipeline.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import CORPUS, RESULTS, ROOT, write_json

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "refrain_bench_ml"
# A Redis db of its own: a shared one lets other sessions' workers take this bench's chunks.
BROKER = "redis://127.0.0.1:6379/5"
CONCURRENCY = 2


def _manifest(tmp: Path, limit: int) -> tuple[Path, dict[str, dict[str, str]]]:
    rows = list(csv.DictReader((CORPUS / "manifest.csv").open(newline="")))
    if limit:
        # A seeded random subset: the manifest is ordered by genre.
        import random

        rows = random.Random(0).sample(rows, limit)
    out = tmp / "manifest.csv"
    truth = {}
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "labels", "clip_id", "split", "primary_label"])
        w.writeheader()
        for r in rows:
            truth[r["clip_id"]] = r
            w.writerow(
                {
                    "path": str(CORPUS / r["path"]),
                    "labels": r["labels"] if r["split"] == "train" else "",
                    "clip_id": r["clip_id"],
                    "split": r["split"],
                    "primary_label": r["primary_label"],
                }
            )
    return out, truth


def child(backends: list[str], limit: int, seed: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    # A benchmark, not a deployment: PostgreSQL with DEBUG off needs no SECRET_KEY here.
    os.environ.setdefault("REFRAIN_ENV", "development")
    import django

    django.setup()
    import numpy as np
    from django.core.management import call_command

    from active_learning.core.metrics import evaluate
    from active_learning.models import ModelVersion
    from active_learning.selectors import prediction_matrix
    from annotation.models import Clip, Project
    from annotation.selectors import TaxonomyIndex
    from annotation.services.clips import clips_import_manifest
    from annotation.services.taxonomies import taxonomy_import
    from refrain.celery import app
    from refrain.localworker import local_worker
    from taxonomy.hierarchy import Hierarchy

    call_command("migrate", verbosity=0)
    tax = taxonomy_import(
        name="Corpus", data=(CORPUS / "taxonomy.json").read_bytes(), filename="taxonomy.json"
    )
    project = Project.objects.create(name="Bench", slug="bench", taxonomy_version=tax.version)
    tmp = Path(tempfile.mkdtemp())
    manifest, truth = _manifest(tmp, limit)
    t0 = time.perf_counter()
    job = clips_import_manifest(project=project, manifest=manifest)
    import_s = time.perf_counter() - t0
    clips = list(Clip.objects.filter(project=project, status=Clip.Status.READY))
    audio_s = float(sum(c.duration_s or 0.0 for c in clips))
    index = TaxonomyIndex.for_version(tax.version)
    h = Hierarchy(index.parents_array)
    ext = {c.id: c.external_id for c in clips}

    out: dict = {
        "import": {"seconds": import_s, "imported": job.n_imported, "labelled": job.n_labels},
        "n_clips": len(clips),
        "audio_seconds": audio_s,
        "backends": {},
    }
    log = tmp / "worker.log"
    with local_worker(concurrency=CONCURRENCY, logfile=log, name="bench-ml"):
        app.send_task("refrain.ping").get(timeout=300)
        for backend in backends:
            t0 = time.perf_counter()
            fs = app.send_task(
                "active_learning.tasks.extract_features_for_project",
                args=[project.id],
                kwargs={"backend": backend},
            ).get(timeout=7200)
            extract_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            mv_sum = app.send_task(
                "active_learning.tasks.train_project_model",
                args=[project.id],
                kwargs={"n_folds": 5, "seed": seed},
            ).get(timeout=3600)
            train_s = time.perf_counter() - t0
            mv = ModelVersion.objects.get(id=mv_sum["model_version"])
            res: dict = {
                "feature_set": fs,
                "extract_wall_s": extract_s,
                "audio_x_realtime_wall": audio_s / extract_s,
                "audio_x_realtime_per_core": audio_s / extract_s / CONCURRENCY,
                "train_task_wall_s": train_s,
                "model_version": mv_sum,
                "train_seconds_in_task": mv.metrics.get("train_seconds"),
                "cv_timings": mv.metrics.get("timings"),
                "cv_out_of_sample_metrics_train_split": {
                    k: v
                    for k, v in mv.metrics.items()
                    if k not in ("timings", "per_depth_macro_f1", "fold_hier_f1")
                },
            }
            if mv.status == "done":
                clip_ids, probs, _ = prediction_matrix(model_version=mv)
                test_rows = [
                    i for i, c in enumerate(clip_ids.tolist()) if truth[ext[c]]["split"] == "test"
                ]
                Y = np.zeros((len(test_rows), h.n_nodes), dtype=np.int8)
                primary = np.zeros(len(test_rows), dtype=np.int64)
                for j, i in enumerate(test_rows):
                    r = truth[ext[int(clip_ids[i])]]
                    for lab in r["labels"].split("|"):
                        Y[j, index.lookup(lab).index] = 1
                    primary[j] = index.lookup(r["primary_label"]).index
                Y = h.ancestor_close(Y)
                cands = np.unique([index.lookup(r["primary_label"]).index for r in truth.values()])
                res["test_split"] = {
                    "n": len(test_rows),
                    **evaluate(
                        Y,
                        np.asarray(probs[test_rows]),
                        parents=h,
                        primary=primary,
                        candidates=cands,
                    ),
                }
            out["backends"][backend] = res
            print(json.dumps({backend: res}, default=float), flush=True)
    print("RESULT " + json.dumps(out, default=float))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="logmel-stats")
    ap.add_argument("--limit", type=int, default=0, help="A seeded random subset of N clips")
    ap.add_argument("--broker", default=BROKER, help="A Redis db no other worker listens on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if args.child:
        child(backends, args.limit, args.seed)
        return
    if not (CORPUS / "manifest.csv").exists():
        sys.exit(f"corpus not found at {CORPUS}")

    def psql(sql: str) -> None:
        subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True)

    psql(f"DROP DATABASE IF EXISTS {PG_DB}")
    psql(f"CREATE DATABASE {PG_DB}")
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{PG_DB}",
                "CELERY_BROKER_URL": args.broker,
                "CELERY_RESULT_BACKEND": "django-db",
                "REFRAIN_VAR_DIR": tmp,
                # Clips are read only inside the import roots: the corpus, and the temp folder the child
                # writes its manifest into.
                "REFRAIN_IMPORT_ROOTS": f"{CORPUS},{tempfile.gettempdir()}",
                "LOG_LEVEL": "WARNING",
            }
            cmd = [
                sys.executable,
                "-m",
                "bench.ml_pipeline",
                "--child",
                "--backends",
                args.backends,
            ]
            cmd += ["--limit", str(args.limit), "--seed", str(args.seed)]
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"bench child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    finally:
        psql(f"DROP DATABASE IF EXISTS {PG_DB}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = {
        "benchmark": "ml_pipeline",
        "what": __doc__.split("\n\n")[1].strip() if __doc__ else "",
        "seed": args.seed,
        "limit": args.limit or None,
        "worker_concurrency": CONCURRENCY,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
            "note": "2 shared cores under heavy load from other sessions; wall-clock figures",
        },
        "total_wall_s": time.perf_counter() - t0,
        **json.loads(line.removeprefix("RESULT ")),
    }
    write_json(RESULTS / "ml_pipeline.json", result, default=float)
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
