"""Next-task and submit latency on PostgreSQL with 100k clips in one project, over real HTTP.

Builds a dedicated database (``refrain_bench``, dropped at the end) with 100k clips and tasks and a
work history (each of the 50 annotators has already labelled ``--history`` clips, so the "never the
same clip twice" checks have rows to look at), then:

* the server is gunicorn with ``--workers`` sync worker processes (4 by default: 2 per core) serving
  the real Django app (session auth with the CSRF header, as the annotator page sends it;
  ATOMIC_REQUESTS; django-ninja; the consensus message to Redis on each submit). Each response
  carries a ``Server-Timing`` header with the time spent in the Django app, the worker's CPU time
  and the time in SQL statements (the COMMIT counts in ``app``, not in ``db``), written by the WSGI
  wrapper :func:`server_app`;
* the load generator is a separate process without Django: one thread per annotator, each with its
  own HTTP connection (``http.client``), looping next-task -> think -> submit.

Three paces per annotator (the think time is the pause with the clip on screen, between receiving a
task and submitting it; the next request follows the submit at once, as the page does):

* ``human``: uniform 10-30 s, what people take to listen to a clip and pick genres. 50 such
  annotators send ~5 requests/s;
* ``dense``: uniform 1-3 s, ten times faster than anyone labels, to load the server at 50
  annotators (~50 requests/s offered) while keeping arrivals spread out;
* ``zero``: no pause at all, a closed loop measuring saturation; with N annotators and a server
  doing X requests/s the client-side latency is about N/X whatever the per-request cost.

The client-side latency includes waiting for a free worker (the listen queue) and the load
generator's own scheduling on the shared 2 cores; ``server`` figures are the app time alone, with
the worker's CPU time and the time in SQL statements beside it, and each endpoint lists its three
slowest requests broken down the same way. The machine's load average (other people's jobs run here
too) is recorded before and after each level. With ``--repeat``, ``summary`` pools the samples of
all repeats before taking percentiles (a p99 over fewer than 100 samples is their maximum) and
``rows`` keeps each run.

    .venv/bin/python -m bench.queue_latency [--clips 100000] [--history 400] [--workers 4]
        [--modes human,dense,zero] [--levels 1,10,50] [--human-levels 10,50] [--seconds 60]
        [--human-seconds 180] [--repeat 1]

The human pace runs at 10 and 50 annotators only: one annotator at 10-30 s per clip yields a
handful of requests in minutes, and with nobody else on the server it is the dense pace's
1-annotator case (a lone request on an idle server) measured slower.

Prints a table and writes ``bench/results/queue_latency.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT, write_json

BENCH_DB = "refrain_bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12")
SERVER_ENV = {
    "DATABASE_URL": f"{PG}/{BENCH_DB}",
    "CELERY_BROKER_URL": BROKER,
    "DJANGO_SETTINGS_MODULE": "refrain.settings",
    "LOG_LEVEL": "WARNING",
    "DEBUG": "False",
    "CONN_MAX_AGE": "600",
    # A benchmark on loopback, not a deployment: no SECRET_KEY needed, no HTTPS redirect.
    "REFRAIN_ENV": "development",
}
# Think time in seconds, uniform between the two bounds, per pace.
PACES = {"human": (10.0, 30.0), "dense": (1.0, 3.0), "zero": (0.0, 0.0)}
N_USERS = 50


# --- the server side: gunicorn loads this module in each worker -----------------------------------

_app: Any = None


def server_app(environ: dict, start_response: Any) -> Any:
    """The Django WSGI app, with ``Server-Timing: app;dur=…, db;dur=…;desc="<queries>"``."""
    global _app
    if _app is None:
        from django.core.wsgi import get_wsgi_application

        _app = get_wsgi_application()
    from django.db import connection

    sql = [0, 0.0]

    def timed(execute: Any, query: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(query, params, many, context)
        finally:
            sql[0] += 1
            sql[1] += time.perf_counter() - t

    t0, cpu0 = time.perf_counter(), time.process_time()

    def start(status: str, headers: list, exc_info: Any = None) -> Any:
        app_ms = (time.perf_counter() - t0) * 1000
        cpu_ms = (time.process_time() - cpu0) * 1000
        timing = f'app;dur={app_ms:.2f}, cpu;dur={cpu_ms:.2f}, db;dur={sql[1] * 1000:.2f};desc="{sql[0]}"'
        headers.append(("Server-Timing", timing))
        return start_response(status, headers, exc_info)

    with connection.execute_wrapper(timed):
        return _app(environ, start)


# --- the load generator: its own process, no Django -----------------------------------------------

_TIMING = re.compile(r'app;dur=([\d.]+), cpu;dur=([\d.]+), db;dur=([\d.]+);desc="(\d+)"')


def load(spec: dict) -> dict:
    """Run ``spec['annotators']`` annotator threads for ``spec['seconds']``; raw samples out."""
    lo, hi = spec["think"]
    n = spec["annotators"]
    samples: dict[str, list[list[float]]] = {"next": [], "submit": []}
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)
    next_url = f"/api/v1/projects/{spec['project_id']}/tasks/next"

    def post(conn: http.client.HTTPConnection, url: str, body: bytes, headers: dict) -> tuple:
        t = time.perf_counter()
        conn.request("POST", url, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        ms = (time.perf_counter() - t) * 1000
        m = _TIMING.search(r.getheader("Server-Timing") or "")
        nan = float("nan")
        server = (float(m[1]), float(m[2]), float(m[3]), int(m[4])) if m else (nan, nan, nan, -1)
        return r.status, data, [ms, *server]

    def annotator(i: int) -> None:
        rng = random.Random(spec["seed"] * 1000 + i)
        sid, csrf = spec["sessions"][i]
        headers = {
            "Cookie": f"sessionid={sid}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "Content-Type": "application/json",
        }
        conn = http.client.HTTPConnection(spec["host"], spec["port"], timeout=60)
        barrier.wait()
        deadline = spec["t_end"]
        # Spread the first arrivals over one think time, as people do not start in step.
        time.sleep(rng.uniform(0, hi))
        try:
            while time.time() < deadline:
                status, data, row = post(conn, next_url, b"", headers)
                if status != 200:
                    with lock:
                        errors.append(f"next {status} {data[:120]!r}")
                    return
                task_id = json.loads(data)["task_id"]
                if hi:
                    time.sleep(rng.uniform(lo, hi))
                body = json.dumps(
                    {
                        "labels": rng.sample(spec["labels"], 2),
                        "idempotency_key": f"{spec['seed']}-{i}-{task_id}",
                        "time_spent_ms": 1000,
                    }
                ).encode()
                status2, data2, row2 = post(
                    conn, f"/api/v1/tasks/{task_id}/annotations", body, headers
                )
                with lock:
                    samples["next"].append(row)
                    samples["submit"].append(row2)
                    if status2 != 201:
                        errors.append(f"submit {status2} {data2[:120]!r}")
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=annotator, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    spec["t_end"] = time.time() + spec["seconds"]
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return {"samples": samples, "errors": errors, "wall_s": time.perf_counter() - t0}


# --- building the database ------------------------------------------------------------------------


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def build(n_clips: int, history: int) -> dict:
    os.environ.update(SERVER_ENV)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection
    from django.test import Client
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from annotation.models import (
        Annotation,
        AnnotationLabel,
        Assignment,
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
    roots = TaxonomyNode.objects.bulk_create(
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
    )
    children = TaxonomyNode.objects.bulk_create(
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
    )
    version.n_nodes, version.max_depth = 176, 1
    version.save()
    project = Project.objects.create(
        name="Bench", slug="bench", taxonomy_version=version, overlap=1, blind=True
    )
    clips = Clip.objects.bulk_create(
        (
            Clip(
                project=project,
                external_id=f"c{i}",
                storage_key=f"/bench/c{i}.wav",
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
    tasks = Task.objects.bulk_create(
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
        [User(username=f"bench{i}", password=password) for i in range(N_USERS)]
    )
    Membership.objects.bulk_create([Membership(project=project, user=u) for u in users])

    # Past work: each annotator has labelled `history` clips (done tasks, submitted assignments,
    # annotations with two labels and their implied parents).
    now = timezone.now()
    done = rng.sample(tasks, min(len(tasks), history * N_USERS))
    Task.objects.filter(pk__in=[t.pk for t in done]).update(
        status=Task.Status.DONE, n_submitted=1, completed_at=now
    )
    owners = [users[k % N_USERS] for k in range(len(done))]
    assignments = Assignment.objects.bulk_create(
        (
            Assignment(
                task=t,
                user=u,
                status=Assignment.Status.SUBMITTED,
                lease_expires_at=now,
                created_at=now,
                finished_at=now,
            )
            for t, u in zip(done, owners, strict=True)
        ),
        batch_size=5000,
    )
    annotations = Annotation.objects.bulk_create(
        (
            Annotation(
                clip_id=a.task.clip_id,
                taxonomy_version=version,
                task=a.task,
                assignment=a,
                user=a.user,
                source=f"user:{a.user.username}",
            )
            for a in assignments
        ),
        batch_size=5000,
    )
    labels = []
    for ann in annotations:
        picked = rng.sample(children, 2)
        labels += [AnnotationLabel(annotation=ann, node_id=n.pk) for n in picked]
        parents = {n.parent_id for n in picked}
        labels += [AnnotationLabel(annotation=ann, node_id=p, explicit=False) for p in parents]
    AnnotationLabel.objects.bulk_create(labels, batch_size=10000)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")

    sessions = []
    for u in users:
        c = Client()
        c.force_login(u)
        sessions.append((c.cookies[settings.SESSION_COOKIE_NAME].value, get_random_string(32)))
    connection.close()
    return {
        "project_id": project.pk,
        "labels": [c.key for c in children],
        "sessions": sessions,
        "build_s": round(time.perf_counter() - t0, 1),
    }


def checks() -> dict:
    """The queue's guarantees after the run, counted in the database."""
    from django.db import connection

    with connection.cursor() as cur:
        out = {}
        for name, sql in {
            "tasks_over_overlap": "SELECT count(*) FROM annotation_task WHERE n_submitted > overlap",
            "clip_twice_to_one_annotator": """SELECT count(*) FROM (SELECT a.user_id, t.clip_id
                FROM annotation_assignment a JOIN annotation_task t ON t.id = a.task_id
                GROUP BY 1, 2 HAVING count(*) > 1) d""",
            "submitted_without_annotation": """SELECT count(*) FROM annotation_assignment a
                WHERE a.status = 'submitted' AND NOT EXISTS
                (SELECT 1 FROM annotation_annotation n WHERE n.assignment_id = a.id)""",
        }.items():
            cur.execute(sql)
            out[name] = cur.fetchone()[0]
    connection.close()
    return out


def purge_broker() -> None:
    """Drop the consensus messages the submits queued (no worker consumes them here)."""
    from refrain.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("default")
    except Exception as exc:  # a broker outage must not lose the results
        print(f"could not purge the broker queue: {exc}", file=sys.stderr)


# --- orchestration --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers: int, port: int, log: Path) -> subprocess.Popen:
    cmd = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--backlog",
        "1024",
        "--timeout",
        "120",
        "--chdir",
        str(ROOT),
        "bench.queue_latency:server_app",
    ]
    env = {**os.environ, **SERVER_ENV}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/v1/openapi.json")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("gunicorn did not answer within 60 s")


def _cpu_busy() -> tuple[float, float]:
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(-(-q * len(xs) // 1)) - 1))
    return round(xs[k], 2)


def endpoint_stats(samples: list[list[float]]) -> dict:
    """Percentiles of one endpoint's samples ``[client, app, cpu, sql ms, statements]``."""
    client, app, cpu, db = ([r[k] for r in samples] for k in range(4))
    slowest = sorted(samples, key=lambda r: -r[0])[:3]
    return {
        "n": len(samples),
        "p50_ms": _pct(client, 0.5),
        "p99_ms": _pct(client, 0.99),
        "max_ms": _pct(client, 1.0),
        "server_p50_ms": _pct(app, 0.5),
        "server_p99_ms": _pct(app, 0.99),
        "server_cpu_p50_ms": _pct(cpu, 0.5),
        "server_sql_p50_ms": _pct(db, 0.5),
        "statements": sorted({int(r[4]) for r in samples}),
        # [client ms, server app ms, server CPU ms, SQL ms, statements]: where the tail came from
        "slowest": [[round(x, 1) for x in r[:4]] + [int(r[4])] for r in slowest],
    }


def run_level(spec: dict) -> tuple[dict, dict]:
    """One level in a fresh load-generator process: its summary row and the raw samples."""
    la_before = os.getloadavg()
    busy0, total0 = _cpu_busy()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.queue_latency", "--load", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    busy1, total1 = _cpu_busy()
    la_after = os.getloadavg()
    raw = json.loads(proc.stdout)
    row: dict[str, Any] = {
        "pace": spec["pace"],
        "think_s": spec["think"],
        "annotators": spec["annotators"],
        "seconds": round(raw["wall_s"], 1),
        "pairs": len(raw["samples"]["next"]),
        "errors": len(raw["errors"]),
        "error_samples": raw["errors"][:5],
    }
    for ep, samples in raw["samples"].items():
        row[ep] = endpoint_stats(samples)
    row["requests_per_s"] = round(2 * row["pairs"] / raw["wall_s"], 1)
    row["loadavg_before"] = [round(x, 2) for x in la_before]
    row["loadavg_after"] = [round(x, 2) for x in la_after]
    row["cpu_busy_pct"] = round(100 * (busy1 - busy0) / max(1.0, total1 - total0), 1)
    return row, raw["samples"]


def summarise(rows: list[dict], pooled: dict[tuple[str, int], dict[str, list]]) -> list[dict]:
    """One row per pace and annotator count: percentiles over the samples of all repeats pooled,
    throughput and load as the median over the repeats."""
    from statistics import median

    out = []
    for (pace, n), samples in pooled.items():
        rs = [r for r in rows if (r["pace"], r["annotators"]) == (pace, n)]
        row: dict[str, Any] = {"pace": pace, "annotators": n, "repeats": len(rs)}
        row["pairs"] = sum(r["pairs"] for r in rs)
        row["errors"] = sum(r["errors"] for r in rs)
        row["requests_per_s"] = round(median(r["requests_per_s"] for r in rs), 1)
        for ep in ("next", "submit"):
            row[ep] = endpoint_stats(samples[ep])
        row["loadavg_1min"] = [r["loadavg_after"][0] for r in rs]
        row["cpu_busy_pct"] = round(median(r["cpu_busy_pct"] for r in rs), 1)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=400, help="clips each annotator has labelled")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    ap.add_argument("--modes", default="human,dense,zero")
    ap.add_argument("--levels", default="1,10,50", help="annotator counts")
    ap.add_argument("--human-levels", default="10,50", help="annotator counts at the human pace")
    ap.add_argument("--seconds", type=float, default=60, help="per level, dense and zero")
    ap.add_argument("--human-seconds", type=float, default=180, help="per level, human pace")
    ap.add_argument("--repeat", type=int, default=1, help="run every level this many times")
    ap.add_argument("--keep", action="store_true", help="keep the refrain_bench database")
    ap.add_argument("--out", default=str(RESULTS / "queue_latency.json"))
    ap.add_argument("--load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        print(json.dumps(load(json.loads(args.load))))
        return

    _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    _admin(f"CREATE DATABASE {BENCH_DB}")
    port = _free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"queue_latency_gunicorn_{port}.log"
    server = None
    rows: list[dict] = []
    pooled: dict[tuple[str, int], dict[str, list]] = {}
    try:
        data = build(args.clips, args.history)
        print(f"built {args.clips} clips, {args.history} done per annotator in {data['build_s']} s")
        server = start_server(args.workers, port, log)
        base = {
            "host": "127.0.0.1",
            "port": port,
            "project_id": data["project_id"],
            "labels": data["labels"],
            "sessions": data["sessions"],
        }
        # Warm-up (discarded): every worker imports, connects and caches the taxonomy index.
        run_level(
            {**base, "pace": "warmup", "think": [0, 0], "annotators": 16, "seconds": 15, "seed": 0}
        )
        seed = 1
        for rep in range(args.repeat):
            for pace in args.modes.split(","):
                levels = args.human_levels if pace == "human" else args.levels
                for n in [int(x) for x in levels.split(",")]:
                    seconds = args.human_seconds if pace == "human" else args.seconds
                    spec = {**base, "pace": pace, "think": list(PACES[pace]), "annotators": n}
                    row, samples = run_level({**spec, "seconds": seconds, "seed": seed})
                    row["repeat"] = rep
                    seed += 1
                    rows.append(row)
                    for ep, xs in samples.items():
                        pooled.setdefault((pace, n), {}).setdefault(ep, []).extend(xs)
                    print(json.dumps({k: v for k, v in row.items() if k != "error_samples"}))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    os.environ.update(SERVER_ENV)
    guarantees = checks()
    purge_broker()
    if not args.keep:
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")

    summary = summarise(rows, pooled)
    print(
        f"{'pace':>6} {'annot':>5} {'pairs':>6} {'req/s':>6} {'next p50/p99 (server p50/p99)':>32} "
        f"{'submit p50/p99 (server p50/p99)':>33} {'err':>4} {'load1 max':>9}"
    )
    for r in summary:
        cells = [
            f"{r[e]['p50_ms']:.1f}/{r[e]['p99_ms']:.1f} ({r[e]['server_p50_ms']:.1f}/{r[e]['server_p99_ms']:.1f})"
            for e in ("next", "submit")
        ]
        print(
            f"{r['pace']:>6} {r['annotators']:>5} {r['pairs']:>6} {r['requests_per_s']:>6} "
            f"{cells[0]:>32} {cells[1]:>33} {r['errors']:>4} {max(r['loadavg_1min']):>9}"
        )
    out = Path(args.out)
    write_json(
        out,
        {
            "clips": args.clips,
            "history_per_annotator": args.history,
            "database": f"PostgreSQL (dedicated {BENCH_DB}), broker {BROKER}",
            "server": f"gunicorn, {args.workers} sync workers, session auth + CSRF header",
            "client": "separate process, one thread and HTTP connection per annotator",
            "paces_think_s": PACES,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "goal_p99_ms": 50,
            "guarantees": guarantees,
            "summary": summary,
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
