"""Clip-import rate on the real corpus manifest: SQLite (embedded) vs PostgreSQL, one run.

    .venv/bin/python -m bench.import_rate [--repeats 3] [--limit 0]

Each repeat imports ``../shared/data/corpus/manifest.csv`` (2,449 ten-second OGG clips, multi-label
taxonomy paths) into a fresh database with the corpus taxonomy, in a child process per backend so
each gets its own Django settings. Reports clips/s (median over repeats) and writes
``bench/results/import_rate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import CORPUS, RESULTS, ROOT, write_json

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "refrain_bench_import"


def child(limit: int) -> None:
    """Runs inside a fresh process whose DATABASE_URL is already set."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    # A benchmark, not a deployment: PostgreSQL with DEBUG off needs no SECRET_KEY here.
    os.environ.setdefault("REFRAIN_ENV", "development")
    import django

    django.setup()
    from django.core.management import call_command

    from annotation.models import Annotation, Clip, Project
    from annotation.services.clips import clips_import_manifest
    from annotation.services.taxonomies import taxonomy_import

    call_command("migrate", verbosity=0)
    tax = taxonomy_import(
        name="Corpus", data=(CORPUS / "taxonomy.json").read_bytes(), filename="taxonomy.json"
    )
    project = Project.objects.create(name="Bench", slug="bench", taxonomy_version=tax.version)
    manifest = CORPUS / "manifest.csv"
    if limit:
        lines = manifest.read_text().splitlines()[: limit + 1]
        manifest = Path(tempfile.mkdtemp()) / "manifest.csv"
        manifest.write_text("\n".join(lines).replace("audio/", f"{CORPUS}/audio/") + "\n")
    t0 = time.perf_counter()
    job = clips_import_manifest(project=project, manifest=manifest)
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "imported": job.n_imported,
                "failed": job.n_failed,
                "duplicate": job.n_duplicate,
                "labelled": job.n_labels,
                "clips_in_db": Clip.objects.count(),
                "annotations_in_db": Annotation.objects.count(),
            }
        )
    )


def run_child(database_url: str, limit: int, var_dir: str) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REFRAIN_VAR_DIR": var_dir,
        # Clips are read only inside the import roots: the corpus, and the temp folder the child
        # writes its manifest into.
        "REFRAIN_IMPORT_ROOTS": f"{CORPUS},{tempfile.gettempdir()}",
        "LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.import_rate", "--child", "--limit", str(limit)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def psql(sql: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="Import only the first N rows")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.limit)
        return
    if not (CORPUS / "manifest.csv").exists():
        sys.exit(f"corpus not found at {CORPUS}")
    runs: dict[str, list[dict]] = {"sqlite": [], "postgresql": []}
    for r in range(args.repeats):
        # Alternate the order so drift on a shared machine hits both backends alike.
        order = ["sqlite", "postgresql"] if r % 2 == 0 else ["postgresql", "sqlite"]
        for backend in order:
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{tmp}/bench.sqlite3"
                else:
                    psql(f"DROP DATABASE IF EXISTS {PG_DB}")
                    psql(f"CREATE DATABASE {PG_DB}")
                    url = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
                try:
                    res = run_child(url, args.limit, tmp)
                finally:
                    if backend == "postgresql":
                        psql(f"DROP DATABASE IF EXISTS {PG_DB}")
            res["clips_per_s"] = res["imported"] / res["seconds"]
            runs[backend].append(res)
            print(
                f"repeat {r + 1} {backend:<10} {res['imported']} clips in {res['seconds']:.1f} s "
                f"= {res['clips_per_s']:.0f} clips/s ({res['failed']} failed, {res['labelled']} labelled)"
            )
    summary = {
        b: {
            "median_clips_per_s": statistics.median(x["clips_per_s"] for x in rs),
            "median_seconds": statistics.median(x["seconds"] for x in rs),
            "imported": rs[0]["imported"],
            "failed": rs[0]["failed"],
            "labelled": rs[0]["labelled"],
            "runs": rs,
        }
        for b, rs in runs.items()
    }
    result = {
        "benchmark": "import_rate",
        "what": "clips_import_manifest on ../shared/data/corpus/manifest.csv: hash, probe (header + first/last frames decoded), bulk insert of clips, import annotations and ancestor-closed labels",
        "repeats": args.repeats,
        "limit": args.limit or None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
        },
        "results": summary,
        "ratio_postgresql_over_sqlite": summary["postgresql"]["median_clips_per_s"]
        / summary["sqlite"]["median_clips_per_s"],
    }
    write_json(RESULTS / "import_rate.json", result)
    for b, s in summary.items():
        print(
            f"{b:<10} median {s['median_clips_per_s']:.0f} clips/s ({s['median_seconds']:.1f} s for {s['imported']} clips)"
        )
    print(f"postgresql/sqlite rate ratio: {result['ratio_postgresql_over_sqlite']:.2f}")


if __name__ == "__main__":
    main()
