"""Soak: 50 annotators at a dense pace for minutes against gunicorn + PostgreSQL + Redis + a Celery
worker, with relabel cycles running at the same time; then every acknowledged annotation is checked
to be stored exactly once, and every clip's consensus against its annotations, by query.

The stack is started here and stopped here, on loopback only:

* PostgreSQL: the machine's server (``SOAK_PG``, default 127.0.0.1:5432) with a dedicated database
  ``refrain_soak``, created at the start and dropped at the end (``--keep`` keeps it);
* Redis: ``SOAK_BROKER`` (default ``redis://127.0.0.1:6379/13``), its Celery queues purged before
  and after;
* gunicorn with ``--workers`` sync workers serving the app (``DEBUG=False``, bearer tokens);
* one Celery worker (``--worker-concurrency``) on the ``default``, ``cpu`` and ``gpu`` queues: the
  consensus update after every submit, the relabel cycle's steps.

The project has ``--clips`` clips (0.5 s tones whose pitch is their genre, so a cycle trains on
real if simple signal), each with a label task of overlap ``--overlap``; 60 of them carry a seed
label. ``--annotators`` accounts with API tokens, one thread and one HTTP connection each in this
process, loop: take the next task -> think (uniform ``--think``, default 0.5-2 s) -> submit (the
clip's genre 80 % of the time, another one otherwise), with an idempotency key; a connection error
or a 5xx is retried as a real client does (the same key), and counted. An admin starts a relabel
cycle through the API 20 s in, and a new one each time the previous one has ended.

After ``--minutes`` the load stops, the worker is given up to ``--drain`` seconds to empty its
queues (the consensus updates still queued) and finish the running cycle, and the database is
checked (``tests/security/stack.py``: ``verify_annotations``, ``verify_consensus``).

    .venv/bin/python -m bench.soak [--minutes 10] [--annotators 50] [--clips 3000] [--overlap 3]
        [--think 0.5,2] [--workers 4] [--worker-concurrency 2] [--drain 600] [--out ...]

Prints the headline figures and writes ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, write_json
from tests.security.stack import (
    Api,
    django_run,
    free_port,
    server_env,
    start_gunicorn,
    start_worker,
    stop_process,
    stop_worker,
)

SOAK_DB = "refrain_soak"
PG = os.environ.get("SOAK_PG", "postgres://postgres@127.0.0.1:5432")
BROKER = os.environ.get("SOAK_BROKER", "redis://127.0.0.1:6379/13")
QUEUES = ("default", "cpu", "gpu")


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(BROKER, socket_timeout=5)


def queued() -> int:
    r = _redis()
    try:
        return sum(int(r.llen(q)) for q in QUEUES)
    finally:
        r.close()


def purge() -> None:
    r = _redis()
    try:
        r.delete(*QUEUES, "unacked", "unacked_index")
    finally:
        r.close()


def active_cycles() -> int:
    import psycopg

    with psycopg.connect(f"{PG}/{SOAK_DB}", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM quality_qualitycycle WHERE status IN ('queued', 'running')"
        ).fetchone()
    return int(row[0]) if row else 0


def _cpu_busy() -> tuple[float, float]:
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(-(-q * len(xs) // 1)) - 1))
    return round(xs[k], 1)


class Soak:
    """The load: annotator threads and the cycle starter, recording every request."""

    def __init__(self, port: int, data: dict[str, Any], think: tuple[float, float]) -> None:
        self.port = port
        self.data = data
        self.think = think
        self.samples: dict[str, list[float]] = {}
        self.statuses: dict[str, dict[str, int]] = {}
        self.acked: list[list[Any]] = []
        self.client_errors: list[str] = []
        self.cycles: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _record(self, endpoint: str, status: str, ms: float) -> None:
        with self.lock:
            self.samples.setdefault(endpoint, []).append(ms)
            by = self.statuses.setdefault(endpoint, {})
            by[status] = by.get(status, 0) + 1

    def call(self, api: Api, endpoint: str, method: str, path: str, body: Any = None) -> tuple:
        """Retried on connection errors and 5xx (for up to 5 minutes), every attempt recorded."""
        deadline = time.monotonic() + 300
        while True:
            t = time.perf_counter()
            try:
                status, headers, payload = api.request(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                self._record(
                    endpoint, f"conn:{type(exc).__name__}", 1000 * (time.perf_counter() - t)
                )
                pause = 0.5
            else:
                self._record(endpoint, str(status), 1000 * (time.perf_counter() - t))
                if status < 500:
                    return status, payload
                pause = min(float(headers.get("retry-after") or 0.5), 5.0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: only errors for 5 minutes")
            time.sleep(pause)

    def annotator(self, i: int) -> None:
        rng = random.Random(1000 + i)
        api = Api(self.port, self.data["tokens"][i], timeout=120)
        truth, labels = self.data["truth"], self.data["labels"]
        next_url = f"/api/v1/projects/{self.data['project_id']}/tasks/next"
        time.sleep(rng.uniform(0, self.think[1]))  # people do not start in step
        try:
            while not self.stop.is_set():
                status, task = self.call(api, "tasks/next", "POST", next_url)
                if status == 204:
                    time.sleep(2.0)
                    continue
                if status != 200:
                    raise RuntimeError(f"tasks/next answered {status}: {task}")
                time.sleep(rng.uniform(*self.think))
                genre = truth[str(task["clip"]["id"])]
                label = genre if rng.random() < 0.8 else rng.choice(labels)
                key = f"soak-{i}-{task['task_id']}"
                body = {"labels": [label], "idempotency_key": key, "time_spent_ms": 1500}
                status, ann = self.call(api, "submit", "POST", task["submit_url"], body)
                if status in (200, 201):
                    with self.lock:
                        self.acked.append([ann["id"], task["task_id"], key])
                elif status == 409 and isinstance(ann, dict) and ann.get("code") == "lease_expired":
                    continue  # the page would fetch the next task
                else:
                    raise RuntimeError(f"submit answered {status}: {ann}")
        except Exception as exc:
            with self.lock:
                self.client_errors.append(f"annotator {i}: {exc!r}"[:300])
        finally:
            api.close()

    def cycle_starter(self) -> None:
        """An admin starts a cycle 20 s in, and another each time the previous one ended."""
        api = Api(self.port, self.data["admin_token"], timeout=120)
        start_url = f"/api/v1/projects/{self.data['project_id']}/cycles"
        if self.stop.wait(20):
            return
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                status, cycle = self.call(api, "cycles/start", "POST", start_url)
                if status != 202:
                    raise RuntimeError(f"POST cycles answered {status}: {cycle}")
                row = {"id": cycle["id"], "created": cycle["created"], "started_s": t0}
                while not self.stop.wait(3):
                    status, cycle = self.call(
                        api, "cycles/get", "GET", f"/api/v1/cycles/{row['id']}"
                    )
                    if cycle["status"] in ("done", "failed"):
                        row.update(status=cycle["status"], seconds=round(time.monotonic() - t0, 1))
                        row["error"] = cycle["error"][:200]
                        break
                with self.lock:
                    self.cycles.append(row)
        except Exception as exc:
            with self.lock:
                self.client_errors.append(f"cycle starter: {exc!r}"[:300])
        finally:
            api.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--clips", type=int, default=3000)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--think", default="0.5,2", help="seconds, uniform between the two")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    ap.add_argument("--worker-concurrency", type=int, default=2)
    ap.add_argument(
        "--drain", type=float, default=600, help="max seconds to empty the queues, end the cycle"
    )
    ap.add_argument("--note", default="", help="a remark stored with the results")
    ap.add_argument("--keep", action="store_true", help=f"keep the {SOAK_DB} database")
    ap.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = ap.parse_args()
    think = tuple(float(x) for x in args.think.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="refrain-soak-"))
    env = server_env(
        database_url=f"{PG}/{SOAK_DB}",
        broker_url=BROKER,
        var_dir=tmp / "var",
        import_roots=[tmp / "audio"],
        extra={"CONN_MAX_AGE": "600"},
    )
    _admin(f"DROP DATABASE IF EXISTS {SOAK_DB} WITH (FORCE)")
    _admin(f"CREATE DATABASE {SOAK_DB}")
    purge()
    server = worker = None
    out: dict[str, Any] = {}
    la0 = os.getloadavg()
    try:
        t = time.monotonic()
        data = django_run(
            "build_project",
            env=env,
            timeout=1200,
            clips=args.clips,
            annotators=args.annotators,
            overlap=args.overlap,
            audio_dir=str(tmp / "audio"),
            labelled_per_genre=10,
            migrate=True,
        )
        print(
            f"built {args.clips} clips, {args.annotators} annotators in {time.monotonic() - t:.0f} s"
        )
        worker = start_worker(
            env=env, log=tmp / "worker.log", concurrency=args.worker_concurrency, name="soak"
        )
        port = free_port()
        server = start_gunicorn(env=env, port=port, log=tmp / "gunicorn.log", workers=args.workers)
        deadline = time.monotonic() + 180
        while " ready." not in (tmp / "worker.log").read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "worker.log").read_text()[-3000:])
            time.sleep(0.5)

        soak = Soak(port, data, think)  # type: ignore[arg-type]
        threads = [
            threading.Thread(target=soak.annotator, args=(i,), daemon=True)
            for i in range(args.annotators)
        ]
        threads.append(threading.Thread(target=soak.cycle_starter, daemon=True))
        la_start = os.getloadavg()
        busy0, total0 = _cpu_busy()
        t0 = time.monotonic()
        for th in threads:
            th.start()
        backlog: list[list[float]] = []
        loads: list[float] = []
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(10)
            backlog.append([round(time.monotonic() - t0), queued()])
            loads.append(os.getloadavg()[0])
            with soak.lock:
                n = len(soak.acked)
            print(f"  {backlog[-1][0]:>4} s: {n} acknowledged, {backlog[-1][1]} messages queued")
        soak.stop.set()
        for th in threads:
            th.join(timeout=150)
        wall = time.monotonic() - t0
        busy1, total1 = _cpu_busy()
        la_end = os.getloadavg()

        # Let the worker catch up: the consensus updates still queued, the running cycle. The web
        # server is stopped first: its CPU goes to the worker (this box has two cores).
        stop_process(server)
        server = None
        t_drain = time.monotonic()
        while (queued() or active_cycles()) and time.monotonic() - t_drain < args.drain:
            time.sleep(2)
        drained = queued() == 0 and active_cycles() == 0
        time.sleep(5)  # the tasks in hand
        drain_s = round(time.monotonic() - t_drain, 1)
        checks = django_run(
            "batch",
            env=env,
            timeout=1200,
            calls=[
                ["verify_annotations", {"project_id": data["project_id"], "acked": soak.acked}],
                ["verify_consensus", {"project_id": data["project_id"]}],
                ["cycle_facts", {"project_id": data["project_id"]}],
            ],
        )
        worker_log = (tmp / "worker.log").read_text()
        served = sum(sum(v.values()) for v in soak.statuses.values())
        per_endpoint = {
            ep: {
                "n": len(xs),
                "p50_ms": _pct(xs, 0.5),
                "p99_ms": _pct(xs, 0.99),
                "max_ms": _pct(xs, 1.0),
                "statuses": soak.statuses.get(ep, {}),
            }
            for ep, xs in sorted(soak.samples.items())
        }
        errors: dict[str, int] = {}
        for by in soak.statuses.values():
            for st, n in by.items():
                if not st.startswith("2"):
                    errors[st] = errors.get(st, 0) + n
        out = {
            "note": args.note,
            "config": {
                "minutes": args.minutes,
                "annotators": args.annotators,
                "clips": args.clips,
                "overlap": args.overlap,
                "think_s": think,
                "gunicorn_workers": args.workers,
                "worker_concurrency": args.worker_concurrency,
                "database": f"PostgreSQL, dedicated {SOAK_DB} (dropped after)",
                "broker": BROKER,
                "client": "this process: one thread + keep-alive HTTP connection per annotator",
            },
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "loadavg_before_build": [round(x, 2) for x in la0],
                "loadavg_at_start": [round(x, 2) for x in la_start],
                "loadavg_at_end": [round(x, 2) for x in la_end],
                "loadavg_1min_max_during": round(max(loads or [0.0]), 2),
                "cpu_busy_pct_during": round(100 * (busy1 - busy0) / max(1.0, total1 - total0), 1),
                "note": "2-core machine shared with other sessions; latencies include their load",
            },
            "wall_s": round(wall, 1),
            "requests_served": served,
            "requests_per_s": round(served / wall, 1),
            "acknowledged_submits": len(soak.acked),
            "errors_by_status": errors,
            "client_errors": soak.client_errors[:10],
            "endpoints": per_endpoint,
            # As the admin saw them during the run (seconds from the start request to its end) ...
            "cycles_seen": [{k: v for k, v in c.items() if k != "started_s"} for c in soak.cycles],
            "queue_backlog_timeline": backlog,
            "drain_s": drain_s,
            "drained": drained,
            "worker_task_failures": worker_log.count("raised unexpected"),
            "verify_annotations": checks[0],
            "verify_consensus": checks[1],
            # ... and in the database after the drain.
            "cycle_facts": {k: v for k, v in checks[2].items() if k != "model_versions"}
            | {"model_versions": [m[0] for m in checks[2]["model_versions"]]},
        }
        va, vc = checks[0], checks[1]
        out["verdict"] = {
            "every_acknowledged_stored_once": not (
                va["acknowledged_missing"]
                or va["acked_keys_not_stored"]
                or va["keys_stored_twice"]
                or va["stored_not_acknowledged"]
            ),
            "no_duplicates": all(
                va[k] == 0
                for k in (
                    "annotations_per_assignment_over_1",
                    "clip_twice_to_one_annotator",
                    "duplicate_tasks",
                    "tasks_count_mismatch",
                    "tasks_over_overlap",
                    "submitted_without_annotation",
                )
            ),
            "consensus_matches": vc["n_missing"] == 0
            and vc["n_stale_count"] == 0
            and vc["n_clip_scope_mismatch"] == 0,
        }
    finally:
        stop_process(server)
        stop_worker(worker)
        purge()
        if not args.keep:
            _admin(f"DROP DATABASE IF EXISTS {SOAK_DB} WITH (FORCE)")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if not out:
        return
    print(
        f"\n{out['requests_served']} requests in {out['wall_s']} s ({out['requests_per_s']}/s), "
        f"{out['acknowledged_submits']} submits acknowledged, errors {out['errors_by_status']}, "
        f"load {out['machine']['loadavg_at_start'][0]}->{out['machine']['loadavg_at_end'][0]}"
    )
    for ep, s in out["endpoints"].items():
        print(f"  {ep:<13} n={s['n']:>6} p50={s['p50_ms']} ms p99={s['p99_ms']} ms {s['statuses']}")
    print(f"  cycles seen: {out['cycles_seen']}; at the end: {out['cycle_facts']['cycles']}")
    print(f"  queue drained in {out['drain_s']} s: {out['drained']}")
    print(f"  verdict: {out['verdict']}")
    path = Path(args.out)
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
