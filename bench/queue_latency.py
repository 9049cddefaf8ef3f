"""Next-task and submit latency on PostgreSQL with 100k clips in one project.

Builds a dedicated database (``refrain_bench``, dropped at the end), fills it with bulk inserts,
then runs 1, 10 and 50 simulated annotators as threads, each with its own connection, through the
whole Django request stack (session auth, ATOMIC_REQUESTS, django-ninja) via the test client:
take a task, submit labels, repeat. Each annotator pauses ``--think`` seconds on average between
requests (humans take 10-30 s per clip; the default 0.2 s is a far denser load), and a second pass
with no pause at all measures saturation on this machine.

    .venv/bin/python bench/queue_latency.py [--clips 100000] [--think 0.2]

Prints a table and writes ``bench/results/queue_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = "refrain_bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
os.environ["DATABASE_URL"] = f"{PG}/{BENCH_DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def build(n_clips: int, n_users: int) -> dict:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from annotation.models import (
        Clip,
        Membership,
        Project,
        Task,
        Taxonomy,
        TaxonomyNode,
        TaxonomyVersion,
    )

    t0 = time.perf_counter()
    taxonomy = Taxonomy.objects.create(name="Bench genres")
    version = TaxonomyVersion.objects.create(
        taxonomy=taxonomy, number=1, source_format="paths", content_sha256="b" * 64
    )
    roots = [
        TaxonomyNode(
            version=version,
            key=f"g{i}",
            name=f"Genre {i}",
            path=f"Genre {i}",
            depth=0,
            index=i,
            is_leaf=False,
        )
        for i in range(16)
    ]
    TaxonomyNode.objects.bulk_create(roots)
    children = [
        TaxonomyNode(
            version=version,
            key=f"g{i}.{j}",
            name=f"Style {i}.{j}",
            path=f"Genre {i}/Style {i}.{j}",
            depth=1,
            index=16 + i * 10 + j,
            parent=r,
        )
        for i, r in enumerate(roots)
        for j in range(10)
    ]
    TaxonomyNode.objects.bulk_create(children)
    version.n_nodes, version.max_depth = 176, 1
    version.save()
    project = Project.objects.create(
        name="Bench", slug="bench", taxonomy_version=version, overlap=1
    )
    clips = Clip.objects.bulk_create(
        (
            Clip(
                project=project,
                external_id=f"c{i}",
                source_path=f"/bench/c{i}.wav",
                sha256=f"{i:064x}",
                duration_s=30.0,
                sample_rate=22050,
                channels=1,
                format="wav",
            )
            for i in range(n_clips)
        ),
        batch_size=5000,
    )
    rng = random.Random(0)
    Task.objects.bulk_create(
        (
            Task(
                project=project,
                clip=c,
                priority=rng.random(),
                reason="import",
                dedupe_key=f"label:import:{c.pk}",
            )
            for c in clips
        ),
        batch_size=5000,
    )
    User = get_user_model()
    password = make_password("bench")
    users = User.objects.bulk_create(
        [User(username=f"bench{i}", password=password) for i in range(n_users)]
    )
    Membership.objects.bulk_create([Membership(project=project, user=u) for u in users])
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return {
        "project_id": project.pk,
        "users": [u.pk for u in users],
        "labels": [c.key for c in children],
        "build_s": round(time.perf_counter() - t0, 1),
    }


def run_level(data: dict, *, annotators: int, per_annotator: int, think: float) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client

    users = get_user_model().objects.filter(pk__in=data["users"][:annotators])
    clients = []
    for u in users:
        c = Client()
        c.force_login(u)
        clients.append(c)
    next_ms: list[float] = []
    submit_ms: list[float] = []
    bad: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(annotators)
    url = f"/api/v1/projects/{data['project_id']}/tasks/next"

    def pause(rng: random.Random) -> None:
        if think:
            time.sleep(rng.uniform(0, 2 * think))

    def work(i: int) -> None:
        rng = random.Random(i)
        c = clients[i]
        try:
            start.wait()
            pause(rng)
            for _ in range(per_annotator):
                t = time.perf_counter()
                r = c.post(url)
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    with lock:
                        bad.append(f"next {r.status_code} {r.content[:160]!r}")
                    return
                task_id = r.json()["task_id"]
                pause(rng)
                body = {
                    "labels": rng.sample(data["labels"], 2),
                    "idempotency_key": f"{i}-{task_id}",
                }
                t = time.perf_counter()
                r2 = c.post(
                    f"/api/v1/tasks/{task_id}/annotations", body, content_type="application/json"
                )
                dt2 = (time.perf_counter() - t) * 1000
                with lock:
                    next_ms.append(dt)
                    submit_ms.append(dt2)
                    if r2.status_code != 201:
                        bad.append(f"submit {r2.status_code}")
                pause(rng)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(annotators)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else float("nan")

    return {
        "annotators": annotators,
        "think_s": think,
        "pairs": len(next_ms),
        "errors": len(bad),
        "error_samples": bad[:5],
        "next_p50_ms": pct(next_ms, 0.50),
        "next_p99_ms": pct(next_ms, 0.99),
        "submit_p50_ms": pct(submit_ms, 0.50),
        "submit_p99_ms": pct(submit_ms, 0.99),
        "next_mean_ms": round(statistics.fmean(next_ms), 2) if next_ms else None,
        "pairs_per_s": round(len(next_ms) / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--think", type=float, default=0.2)
    ap.add_argument("--per-annotator", type=int, default=0, help="pairs per annotator (0: auto)")
    ap.add_argument("--keep", action="store_true", help="keep the refrain_bench database")
    args = ap.parse_args()

    _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    _admin(f"CREATE DATABASE {BENCH_DB}")
    try:
        data = build(args.clips, 50)
        print(f"built {args.clips} clips and tasks in {data['build_s']} s", flush=True)
        rows = []
        for think in (args.think, 0.0):
            for n in (1, 10, 50):
                per = args.per_annotator or {1: 300, 10: 40, 50: 12}[n]
                row = run_level(data, annotators=n, per_annotator=per, think=think)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")

    header = f"{'annot.':>6} {'think s':>7} {'pairs':>6} {'next p50':>9} {'next p99':>9} {'sub p50':>8} {'sub p99':>8} {'pairs/s':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['annotators']:>6} {r['think_s']:>7} {r['pairs']:>6} {r['next_p50_ms']:>9} "
            f"{r['next_p99_ms']:>9} {r['submit_p50_ms']:>8} {r['submit_p99_ms']:>8} {r['pairs_per_s']:>8}"
        )
    out = ROOT / "bench" / "results" / "queue_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "clips": args.clips,
                "database": "PostgreSQL (dedicated refrain_bench)",
                "path": "Django test client -> full request stack (session auth, ATOMIC_REQUESTS)",
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "goal_p99_ms": 50,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
