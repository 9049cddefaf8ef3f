"""Feature extraction with clips and artifacts in an S3 bucket against the local disk, 1 vs 2 worker
processes, and the sizing figures of docs/deploy.md (issue 16).

    python -m bench.extraction_storage [--clips 48] [--musicnn-clips 16] [--skip-db]

What is measured (all on this machine, the same corpus clips, the same backend side by side):

1. **Extraction, bucket vs local disk.** The first ``--clips`` clips of ``../shared/data/corpus``
   (10 s OGG) are uploaded to a bucket on a moto S3 server (HTTP on localhost, in this process).
   *local*: ``decode_audio(path)`` + ``embed``; *bucket*: ``GetObject`` streamed into a fresh local
   cache file (what a worker with a cold cache does per clip), then the same decode + embed. The
   clip-audio reader of the ``storage`` branch (``clip_audio_open``) is not on this branch: the
   bucket read here is boto3's GetObject into a file, which is what that reader does on a miss.
2. **1 vs 2 worker processes** (a ``multiprocessing`` pool, one torch thread each, backend built
   once per process) for both sources.
3. **Artifact I/O** through ``active_learning.artifacts`` (the code this branch ships): a feature
   matrix written with ``FeatureStore`` over the artifacts storage and loaded back (cold: download into
   the cache + mmap + a full read; warm: from the cache), local folder vs bucket.
4. **Retrain time**: the K-fold hierarchical classifier (``cross_val_predict_proba``, 5 folds, the
   FMA tree, D=200) at two N (10k and 100k by default), a line through them: its slope is the cost of
   each further 100k clips. The classifier's steps are capped (``max_steps``), so past ~10k clips the
   fit stops growing with N and only scaling and prediction do; a line through small N overstates.
5. **Database size per million annotations**: bytes per row of annotation, label (4 per
   annotation: explicit leaf + ancestors), task and assignment, from ``pg_total_relation_size`` over
   generated copies (``CREATE TABLE ... (LIKE ... INCLUDING ALL)``, indexes included) of the real
   tables in a scratch database migrated to this checkout (``DATABASE_URL``'s server).

The machine is shared (2 cores, other sessions' jobs): the 1-minute load average is recorded with each
figure, and the process-CPU time next to the wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench import CORPUS, FMA, RESULTS, ROOT, write_json

REGION = "us-east-1"
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------------------------------
# 1-2: extraction
# --------------------------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init(backend: str, endpoint: str, bucket: str, cache: str) -> None:
    import boto3
    import torch

    from active_learning.core.features import get_backend

    torch.set_num_threads(1)
    opts: dict[str, Any] = {}
    if backend.startswith("musicnn"):
        opts["weights_dir"] = str(ROOT / "var" / "models" / "musicnn")
    b = get_backend(backend, **opts)
    b.embed(np.zeros(22050, dtype=np.float32), 22050)  # filters, JIT, weights
    _STATE.update(
        backend=b,
        bucket=bucket,
        cache=Path(cache),
        s3=boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDS)
        if endpoint
        else None,
    )


def _embed_one(item: tuple[str, str]) -> tuple[float, float, float]:
    """(seconds fetching, seconds decoding + embedding, process CPU seconds) for one clip."""
    from active_learning.core.features import decode_audio

    source, rel = item
    c0 = time.process_time()
    t0 = time.perf_counter()
    if source == "bucket":
        target = _STATE["cache"] / f"{uuid.uuid4().hex}.ogg"
        body = _STATE["s3"].get_object(Bucket=_STATE["bucket"], Key=f"clips/{rel}")["Body"]
        with target.open("wb") as fh:
            for block in iter(lambda: body.read(1 << 20), b""):
                fh.write(block)
        path = target
    else:
        path = CORPUS / rel
    t1 = time.perf_counter()
    audio, sr = decode_audio(path)
    _STATE["backend"].embed(audio, sr)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - c0


def extraction_run(
    *, source: str, backend: str, rels: list[str], processes: int, endpoint: str, bucket: str
) -> dict[str, Any]:
    cache = Path(tempfile.mkdtemp(prefix="bench-clip-cache-"))
    load = _load()
    ctx = mp.get_context("fork")
    with ctx.Pool(
        processes, initializer=_init, initargs=(backend, endpoint, bucket, str(cache))
    ) as pool:
        pool.map(_embed_one, [("local", rels[0])] * processes)  # every process built and warm
        t0 = time.perf_counter()
        parts = pool.map(_embed_one, [(source, r) for r in rels], chunksize=1)
        wall = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    fetch = sum(p[0] for p in parts)
    work = sum(p[1] for p in parts)
    return {
        "source": source,
        "backend": backend,
        "processes": processes,
        "clips": len(rels),
        "wall_s": round(wall, 3),
        "clips_per_s": round(len(rels) / wall, 3),
        "clips_per_hour": round(3600 * len(rels) / wall),
        "fetch_s_per_clip": round(fetch / len(rels), 4),
        "decode_embed_s_per_clip": round(work / len(rels), 4),
        "cpu_s_per_clip": round(sum(p[2] for p in parts) / len(rels), 4),
        "load_avg_1min_before": load,
    }


# --------------------------------------------------------------------------------------------------
# 3: artifact I/O through active_learning.artifacts
# --------------------------------------------------------------------------------------------------


def artifact_io(*, endpoint: str, bucket: str, n: int, d: int) -> list[dict[str, Any]]:
    from django.test.utils import override_settings

    from active_learning.artifacts import StorageBlobs
    from active_learning.core.features import FeatureStore
    from refrain.settings import artifact_storage_config

    X = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    ids = [str(i) for i in range(n)]
    out = []
    os.environ["AWS_S3_ENDPOINT_URL"] = endpoint
    for where in ("local", "bucket"):
        tmp = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
        storages = {
            "artifacts": artifact_storage_config(
                f"s3://{bucket}/artifacts" if where == "bucket" else ""
            )
        }
        from django.conf import settings

        with override_settings(
            STORAGES={**settings.STORAGES, **storages},
            ARTIFACT_ROOT=tmp / "artifacts",
            REFRAIN_CACHE_DIR=tmp / "cache",
        ):
            store = FeatureStore(StorageBlobs(), prefix="project_1/features")
            t0 = time.perf_counter()
            store.write("fs_1", X, ids, backend="bench", version="1")
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cold = store.load("fs_1")
            float(np.asarray(cold.X).sum())
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = store.load("fs_1")
            float(np.asarray(warm.X).sum())
            warm_s = time.perf_counter() - t0
        shutil.rmtree(tmp, ignore_errors=True)
        mb = X.nbytes / 1e6
        out.append(
            {
                "storage": where,
                "matrix": f"{n} x {d} float32",
                "mb": round(mb, 1),
                "write_s": round(write_s, 3),
                "write_mb_per_s": round(mb / write_s, 1),
                "cold_load_s": round(cold_s, 3),
                "warm_load_s": round(warm_s, 3),
                "load_avg_1min_before": _load(),
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# 4: retrain time
# --------------------------------------------------------------------------------------------------


def retrain(ns: list[int], *, d: int = 200) -> dict[str, Any]:
    import torch

    from active_learning.core.cv import cross_val_predict_proba
    from active_learning.core.models import HierarchicalClassifier
    from bench.corpus import fma_tree

    # One thread: on a shared, loaded machine OpenMP threads spin against each other.
    torch.set_num_threads(1)
    h = fma_tree(FMA)
    leaves = np.flatnonzero(h.is_leaf)
    runs = []
    for n in ns:
        rng = np.random.default_rng(0)
        leaf = rng.choice(leaves, size=n)
        centres = rng.normal(0, 1.0, size=(h.n_nodes, d)).astype(np.float32)
        X = (centres[leaf] + rng.normal(0, 1.5, size=(n, d))).astype(np.float32)
        Y = np.zeros((n, h.n_nodes), dtype=np.int8)
        Y[np.arange(n), leaf] = 1
        Y = h.ancestor_close(Y)
        load = _load()
        t0, c0 = time.perf_counter(), time.process_time()
        res = cross_val_predict_proba(
            lambda: HierarchicalClassifier(h.parents, seed=0),
            X,
            Y,
            parents=h,
            labeled_mask=np.ones(n, dtype=bool),
            n_splits=5,
            seed=0,
        )
        wall = time.perf_counter() - t0
        runs.append(
            {
                "n": n,
                "wall_s": round(wall, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "hier_f1": round(float(res.metrics.get("hier_f1", float("nan"))), 3),
                "load_avg_1min_before": load,
            }
        )

    def line(key: str) -> tuple[float, float]:
        (n0, y0), (n1, y1) = (runs[0]["n"], runs[0][key]), (runs[-1]["n"], runs[-1][key])
        slope = (y1 - y0) / (n1 - n0)
        return y0 - slope * n0, slope

    fixed_cpu, slope_cpu = line("cpu_s")
    fixed, slope = line("wall_s")
    return {
        "model": "HierarchicalClassifier (default: conditional, step-capped), 5 folds + full fit",
        "k": h.n_nodes,
        "d": d,
        "torch_threads": 1,
        "runs": runs,
        "wall": {
            "fixed_s": round(fixed, 2),
            "s_per_1k_clips": round(1000 * slope, 3),
            "extrapolated_100k_s": round(fixed + slope * 100_000, 1),
            "each_further_100k_s": round(slope * 100_000, 1),
        },
        # CPU seconds: what the run costs a worker that has its core to itself (this machine's
        # wall time is inflated by other sessions' load).
        "cpu": {
            "fixed_s": round(fixed_cpu, 2),
            "s_per_1k_clips": round(1000 * slope_cpu, 3),
            "extrapolated_100k_s": round(fixed_cpu + slope_cpu * 100_000, 1),
            "each_further_100k_s": round(slope_cpu * 100_000, 1),
        },
        "cross_check": "bench/results/al_catalogue_scale.json measured N=100k, D=200, K=163 "
        "directly: 25.5 s wall, 34.2 s CPU (2 threads, unloaded)",
    }


# --------------------------------------------------------------------------------------------------
# 5: database size
# --------------------------------------------------------------------------------------------------

ROWS = 200_000
SCRATCH_DB = "refrain_bench_dbsize"
LABELS_PER_ANNOTATION = 4


def database_size(database_url: str) -> dict[str, Any]:
    """Bytes per row of the annotation tables (generated copies, indexes included)."""
    import psycopg

    # Django is set up on the scratch database (see main): migrate it to this checkout.
    from django.core.management import call_command

    base, _, scratch = database_url.rpartition("/")
    call_command("migrate", verbosity=0)
    from django.db import connection

    n, n_labels = ROWS, ROWS * LABELS_PER_ANNOTATION
    statements = [
        "CREATE TABLE g_task (LIKE annotation_task INCLUDING ALL)",
        "CREATE TABLE g_assignment (LIKE annotation_assignment INCLUDING ALL)",
        "CREATE TABLE g_annotation (LIKE annotation_annotation INCLUDING ALL)",
        "CREATE TABLE g_label (LIKE annotation_annotationlabel INCLUDING ALL)",
        # A label task per clip (100k clips), one submit per task; realistic text widths.
        f"""INSERT INTO g_task (project_id, clip_id, kind, status, priority, reason, reason_detail,
            overlap, n_submitted, dedupe_key, created_at, completed_at)
            SELECT 1, g, 'label', 'done', random(), 'acquired:margin', '{{"score": 0.42}}'::jsonb,
                   1, 1, 'label:' || g, now(), now() FROM generate_series(1, {n}) g""",
        f"""INSERT INTO g_assignment (task_id, user_id, status, lease_expires_at, created_at,
            finished_at)
            SELECT g, 1 + g % 50, 'done', now(), now(), now() FROM generate_series(1, {n}) g""",
        f"""INSERT INTO g_annotation (clip_id, taxonomy_version_id, task_id, assignment_id, user_id,
            kind, source, unsure, note, time_spent_ms, idempotency_key, created_at)
            SELECT g, 1, g, g, 1 + g % 50, 'label', 'user:annotator' || (g % 50), false, '',
                   4000 + g % 9000, md5(g::text), now() FROM generate_series(1, {n}) g""",
        f"""INSERT INTO g_label (annotation_id, node_id, explicit)
            SELECT 1 + (g - 1) / {LABELS_PER_ANNOTATION}, 1 + g % 163, g % {LABELS_PER_ANNOTATION} = 0
            FROM generate_series(1, {n_labels}) g""",
        "VACUUM ANALYZE g_task, g_assignment, g_annotation, g_label",
    ]
    with connection.cursor() as cur:
        for sql in statements[:-1]:
            cur.execute(sql)
    connection.close()
    with psycopg.connect(f"{base}/{scratch}", autocommit=True) as c:
        c.execute(statements[-1])
        sizes = {
            t: c.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0]  # type: ignore[index]
            for t in ("g_task", "g_assignment", "g_annotation", "g_label")
        }
        columns = {
            t: [
                r[0]
                for r in c.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "ORDER BY ordinal_position",
                    (t,),
                ).fetchall()
            ]
            for t in ("g_annotation", "g_label")
        }
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {scratch}")
    rows = {"g_task": n, "g_assignment": n, "g_annotation": n, "g_label": n_labels}
    per_row = {t: round(sizes[t] / rows[t], 1) for t in sizes}
    per_annotation = sum(sizes.values()) / n
    return {
        "rows_generated": rows,
        "labels_per_annotation": LABELS_PER_ANNOTATION,
        "bytes_per_row_with_indexes": per_row,
        "bytes_per_annotation_all_four": round(per_annotation, 1),
        "gb_per_million_annotations": round(per_annotation * 1e6 / 1e9, 2),
        "columns": columns,
    }


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--musicnn-clips", type=int, default=16)
    parser.add_argument("--matrix-rows", type=int, default=20_000)
    parser.add_argument("--retrain-n", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-db", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "extraction_storage.json"))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    os.environ["REFRAIN_ENV"] = "development"  # a benchmark database, not production
    database_url = os.environ.get("DATABASE_URL", "")
    scratch_var = Path(tempfile.mkdtemp(prefix="bench-var-"))
    os.environ["REFRAIN_VAR_DIR"] = str(scratch_var)
    measure_db = not args.skip_db and database_url.startswith("postgres")
    if measure_db:
        import psycopg

        base = database_url.rpartition("/")[0]
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB}")
            admin.execute(f"CREATE DATABASE {SCRATCH_DB}")
        database_url = f"{base}/{SCRATCH_DB}"
    else:
        database_url = f"sqlite:///{scratch_var / 'bench.sqlite3'}"
    os.environ["DATABASE_URL"] = database_url
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[k] = v
    os.environ["AWS_DEFAULT_REGION"] = REGION

    import boto3
    from moto.server import ThreadedMotoServer

    from bench.corpus import read_manifest

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = "refrain-bench"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDS)
    s3.create_bucket(Bucket=bucket)
    rows = read_manifest()[: args.clips]
    rels = [r["path"] for r in rows]
    for rel in rels:
        s3.upload_file(str(CORPUS / rel), bucket, f"clips/{rel}")
    clip_mb = sum((CORPUS / r).stat().st_size for r in rels) / len(rels) / 1e6

    result: dict[str, Any] = {
        "what": __doc__.split("\n\n")[2].strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "note": "shared with other sessions; see load averages",
        },
        "corpus": {"clips": len(rels), "clip_seconds": 10.0, "mean_clip_mb": round(clip_mb, 3)},
        "s3": "moto server (HTTP, localhost), a thread of the driver process: with 2 extraction "
        "processes it serves both under one GIL, so the bucket x2 figure understates a real S3",
        "extraction": [],
    }
    plan = [("logmel-stats", rels, p) for p in (1, 2)]
    if (ROOT / "var" / "models" / "musicnn" / "MSD_musicnn").is_dir() and args.musicnn_clips:
        plan.append(("musicnn-msd", rels[: args.musicnn_clips], 1))
    # Repeats interleave local and bucket runs so both meet the same background load; medians.
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for backend, subset, processes in plan:
            for source in ("local", "bucket"):
                r = extraction_run(
                    source=source,
                    backend=backend,
                    rels=subset,
                    processes=processes,
                    endpoint=endpoint,
                    bucket=bucket,
                )
                runs.setdefault((backend, processes, source), []).append(r)
    for (backend, processes, source), rs in runs.items():
        med = {
            k: float(np.median([r[k] for r in rs]))
            for k in (
                "wall_s",
                "clips_per_s",
                "clips_per_hour",
                "fetch_s_per_clip",
                "decode_embed_s_per_clip",
                "cpu_s_per_clip",
                "load_avg_1min_before",
            )
        }
        # A worker with a core to itself: CPU per clip plus the wait for the object.
        med["clips_per_hour_per_core"] = round(
            3600 / (med["cpu_s_per_clip"] + (med["fetch_s_per_clip"] if source == "bucket" else 0))
        )
        result["extraction"].append(
            {
                "source": source,
                "backend": backend,
                "processes": processes,
                "clips": rs[0]["clips"],
                "median": med,
                "runs": rs,
            }
        )
        print(
            f"extraction {backend:13s} {source:6s} x{processes}: {med['clips_per_s']:6.2f} clips/s "
            f"wall ({med['clips_per_hour']:.0f} clips/h here; {med['cpu_s_per_clip'] * 1000:.0f} ms "
            f"CPU + {1000 * med['fetch_s_per_clip']:.0f} ms fetch per clip -> "
            f"{med['clips_per_hour_per_core']} clips/h per core; load {med['load_avg_1min_before']})",
            flush=True,
        )
    import django

    django.setup()
    result["artifact_io"] = artifact_io(endpoint=endpoint, bucket=bucket, n=args.matrix_rows, d=403)
    for r in result["artifact_io"]:
        print(
            f"artifacts {r['storage']:6s}: write {r['mb']} MB in {r['write_s']} s, cold load "
            f"{r['cold_load_s']} s, warm {r['warm_load_s']} s",
            flush=True,
        )
    server.stop()
    result["retrain"] = retrain([int(x) for x in args.retrain_n.split(",")])
    rt = result["retrain"]
    print(
        f"retrain: {[(r['n'], r['wall_s'], r['cpu_s']) for r in rt['runs']]} (n, wall s, cpu s) -> "
        f"~{rt['cpu']['extrapolated_100k_s']} CPU s (~{rt['wall']['extrapolated_100k_s']} s wall "
        "here) at 100k clips",
        flush=True,
    )
    if measure_db:
        result["database"] = database_size(database_url)
        db = result["database"]
        print(
            f"database: {db['bytes_per_annotation_all_four']} B per annotation (+task, assignment, "
            f"{LABELS_PER_ANNOTATION} labels) -> {db['gb_per_million_annotations']} GB per million",
            flush=True,
        )
    shutil.rmtree(scratch_var, ignore_errors=True)
    write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
