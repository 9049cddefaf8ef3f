"""Faults under load, on real processes: PostgreSQL restarted while annotators submit, and the
Celery broker stopped for a minute while work is in flight and new work is requested.

Each test starts its own servers (a private PostgreSQL from ``initdb``, a private ``redis-server``,
gunicorn, a Celery worker) on free loopback ports, never the machine's shared ones, and stops them
in a ``finally``. Clients behave as a real client does: a connection failure or a 5xx is retried
after a pause (``Retry-After`` when the server gives one), a submit always with the same
idempotency key. Afterwards the database is queried: every acknowledged submit is stored exactly
once, nothing is stored twice, no task is duplicated.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import pytest

from tests.security.stack import (
    Api,
    PrivatePostgres,
    PrivateRedis,
    django_run,
    free_port,
    server_env,
    start_gunicorn,
    stop_process,
)

pytestmark = [pytest.mark.worker]

needs_postgres = pytest.mark.skipif(
    not glob("/usr/lib/postgresql/*/bin/initdb"), reason="PostgreSQL server binaries not installed"
)
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server not installed"
)


# --- a load of annotators that retry as a real client does ----------------------------------------


@dataclass
class Load:
    """What the clients saw: acknowledged submits and every failed attempt, with its time."""

    port: int
    project_id: int
    tokens: list[str]
    truth: dict[str, str]
    labels: list[str]
    think_s: tuple[float, float] = (0.0, 0.05)
    give_up_s: float = 60.0
    acked: list[list[Any]] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)  # when each request got a non-5xx answer
    failures: list[dict[str, Any]] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The request, retried on a connection failure or a 5xx until ``give_up_s``."""
        deadline = time.monotonic() + self.give_up_s
        endpoint = path.rsplit("/", 1)[-1]
        while True:
            t = time.monotonic()
            try:
                status, headers, payload = api.request(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                self._failed(t, endpoint, "connection", repr(exc), None)
                pause = 0.2
            else:
                if status < 500:
                    with self.lock:
                        self.answered.append(time.monotonic())
                    return status, payload
                retry_after = headers.get("retry-after")
                self._failed(t, endpoint, status, str(payload)[:160], retry_after)
                pause = min(float(retry_after), 2.0) if retry_after else 0.2
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: no answer but errors for {self.give_up_s} s")
            time.sleep(pause)

    def _failed(self, t: float, endpoint: str, status: Any, detail: str, retry: Any) -> None:
        # The attempt's start and end: it is the outage's when the two overlap the outage.
        row = {"t": t, "t_end": time.monotonic(), "endpoint": endpoint, "status": status}
        with self.lock:
            self.failures.append({**row, "detail": detail, "retry": retry})

    def annotator(self, i: int) -> None:
        rng = random.Random(i)
        api = Api(self.port, self.tokens[i])
        next_url = f"/api/v1/projects/{self.project_id}/tasks/next"
        try:
            while not self.stop.is_set():
                status, task = self.call(api, "POST", next_url)
                if status == 204:
                    time.sleep(0.2)
                    continue
                if status != 200:
                    raise RuntimeError(f"tasks/next answered {status}: {task}")
                time.sleep(rng.uniform(*self.think_s))
                genre = self.truth[str(task["clip"]["id"])]
                label = genre if rng.random() < 0.8 else rng.choice(self.labels)
                key = f"fault-{i}-{task['task_id']}"
                body = {"labels": [label], "idempotency_key": key, "time_spent_ms": 500}
                status, ann = self.call(api, "POST", task["submit_url"], body)
                if status not in (200, 201):
                    raise RuntimeError(f"submit answered {status}: {ann}")
                with self.lock:
                    self.acked.append([ann["id"], task["task_id"], key, time.monotonic()])
        except Exception as exc:  # reported by the test, not lost in a thread
            with self.lock:
                self.client_errors.append(f"annotator {i}: {exc!r}")
        finally:
            api.close()

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.annotator, args=(i,), daemon=True)
            for i in range(len(self.tokens))
        ]
        for t in threads:
            t.start()
        return threads


def _in_any(failure: dict[str, Any], windows: list[tuple[float, float]]) -> bool:
    """Whether the failed attempt was in flight during one of the outages."""
    return any(failure["t"] <= b and failure["t_end"] >= a for a, b in windows)


def _report_failures(
    load: Load,
    windows: list[tuple[float, float]],
    outside: list[dict[str, Any]],
    inside: list[dict[str, Any]],
) -> None:
    """What the clients met, for the log: per outage, statuses, Retry-After, content types."""
    print(f"acknowledged {len(load.acked)} submits; failed attempts: {len(load.failures)}")
    for k, w in enumerate(windows):
        seen = [f for f in inside if _in_any(f, [w])]
        by_status: dict[str, int] = {}
        for f in seen:
            by_status[str(f["status"])] = by_status.get(str(f["status"]), 0) + 1
        retry = sum(f["retry"] is not None for f in seen)
        html = sum("<html" in f["detail"] for f in seen)
        print(
            f"  outage {k + 1} ({w[1] - w[0]:.1f} s incl. grace): {by_status}, "
            f"{retry} with Retry-After, {html} HTML bodies; e.g. {seen[0]['detail'][:90]!r}"
            if seen
            else f"  outage {k + 1}: no failed attempt"
        )
    for f in outside:
        print(f"  OUTSIDE the outages: {f}")


def _annotation_checks(result: dict[str, Any]) -> None:
    assert result["acknowledged_missing"] == [], result
    assert result["acked_keys_not_stored"] == [], result
    assert result["stored_not_acknowledged"] == [], result
    assert result["keys_stored_twice"] == [], result
    for name in (
        "annotations_per_assignment_over_1",
        "clip_twice_to_one_annotator",
        "duplicate_tasks",
        "tasks_count_mismatch",
        "tasks_over_overlap",
        "submitted_without_annotation",
    ):
        assert result[name] == 0, (name, result)


# --- PostgreSQL restarted during submits ----------------------------------------------------------

#: Seconds after the server is back within which a 5xx is still the outage's (a request that
#: started during it).
GRACE_S = 2.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        yield pg.start()
    finally:
        pg.stop()


@needs_postgres
def test_postgres_restart_during_submits_loses_and_doubles_nothing(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    env = server_env(
        database_url=pg.create_database("refrain"),
        # No worker here: the consensus messages go to a private filesystem queue.
        broker_url="filesystem://",
        var_dir=tmp_path / "var",
        extra={"CONN_MAX_AGE": "60"},
    )
    data = django_run(
        "build_project", env=env, clips=400, annotators=6, overlap=2, migrate=True, timeout=120
    )
    port = free_port()
    server = None
    load = Load(port, data["project_id"], data["tokens"], data["truth"], data["labels"])
    windows: list[tuple[float, float]] = []
    threads: list[threading.Thread] = []
    try:
        server = start_gunicorn(env=env, port=port, log=tmp_path / "gunicorn.log", workers=2)
        threads = load.run()
        time.sleep(6)
        # 1. pg_ctl restart -m fast: every session cut, the server back within a second or so.
        t0 = time.monotonic()
        pg.restart()
        windows.append((t0, time.monotonic() + GRACE_S))
        time.sleep(5)
        # 2. A longer outage: connections refused for 3 s.
        t0 = time.monotonic()
        pg.stop_fast()
        time.sleep(3)
        pg.start_again()
        windows.append((t0, time.monotonic() + GRACE_S))
        t_back = time.monotonic()
        time.sleep(6)
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=70)
        stop_process(server)
    result = django_run(
        "verify_annotations", env=env, project_id=data["project_id"], acked=load.acked
    )
    outside = [f for f in load.failures if not _in_any(f, windows)]
    inside = [f for f in load.failures if _in_any(f, windows)]
    _report_failures(load, windows, outside, inside)
    if outside:
        print((tmp_path / "gunicorn.log").read_text()[-6000:])
    assert not load.client_errors, load.client_errors
    _annotation_checks(result)
    # The outage was felt (the 3 s stop cannot pass unseen by six busy clients) ...
    assert any(_in_any(f, windows[1:]) for f in load.failures), load.failures
    # ... explains every error: a JSON 503 with Retry-After (or a refused connection) ...
    assert outside == [], outside
    assert {f["status"] for f in inside} <= {503, "connection"}, inside
    answered = [f for f in inside if f["status"] == 503]
    assert all(f["retry"] and "<html" not in f["detail"] for f in answered), answered
    # ... and the service came back: requests answered after the last outage (submits, or the
    # queue's "nothing left" once six unthrottled clients finished all 800 tasks before it ended).
    assert sum(t > t_back for t in load.answered) >= 6, "no answers after PostgreSQL came back"


# --- the broker stopped for a minute --------------------------------------------------------------

#: How long the broker stays down at least (longer if the in-flight step has not ended by then).
BROKER_OUTAGE_S = 60.0
#: How long the work queued before and during the outage may take to finish once it is back: a
#: sweep tick (every minute) past its staleness threshold, then a cycle's run on this slow box.
SETTLE_S = 180.0


class ScenarioError(RuntimeError):
    """The scenario itself went wrong (not one of the findings the tests assert)."""


def _sql(url: str, query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _wait(what: str, ok: Any, timeout: float) -> float:
    """Poll ``ok()`` every 0.2 s; the seconds it took. ``TimeoutError`` when time ran out."""
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - t0


class Supervised:
    """The Celery worker under a supervisor (systemd ``Restart=always``, a container restart
    policy): restarted when it exits, each exit recorded with the log line that explains it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        from tests.security.stack import start_worker

        self._start = lambda: start_worker(
            env=env, log=log, concurrency=2, name="broker-fault", beat=True
        )
        self.log = log
        self.exits: list[dict[str, Any]] = []
        self.proc = self._start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if self.proc.poll() is not None:
                lines = self.log.read_text().splitlines()
                why = [ln for ln in lines if "CRITICAL" in ln or "Unrecoverable" in ln]
                self.exits.append(
                    {"t": time.monotonic(), "rc": self.proc.returncode, "why": why[-1:]}
                )
                self.proc = self._start()

    def ready_count(self) -> int:
        return self.log.read_text().count(" ready.")

    def stop(self) -> None:
        from tests.security.stack import stop_worker

        self._stop.set()
        self._thread.join(timeout=5)
        stop_worker(self.proc)


@pytest.fixture(scope="module")
def broker_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run of the scenario, shared by the tests below (a minute of outage is too dear to pay
    once per assertion):

    * project A (tones): a relabel cycle started through the API, in its retrain step on the
      worker when Redis stops; the outage lasts until that step has ended (so the step's end,
      which sends the next step, falls inside it);
    * project B: four annotators take tasks and submit (each submit queues the clip's consensus
      update) before, during and after the outage, retrying errors with the same idempotency key;
    * project C (tones): an admin asks for a relabel cycle once, in the middle of the outage, and
      does not retry (a person who got an error page).

    Redis is stopped (SIGTERM; its append-only file keeps what was queued) for at least a minute
    and started again on the same port; the worker (with beat) runs under a supervisor that
    restarts it if it exits; then everything has ``SETTLE_S`` to finish by itself."""
    tmp = tmp_path_factory.mktemp("broker")
    pg = PrivatePostgres()
    redis = PrivateRedis(tmp / "redis")
    server = None
    worker: Supervised | None = None
    threads: list[threading.Thread] = []
    load: Load | None = None
    facts: dict[str, Any] = {}
    t_start = time.monotonic()
    phases: dict[str, float] = {}
    facts["phases_s"] = phases

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t_start, 1)

    try:
        pg.start()
        url = pg.create_database("refrain")
        redis.start()
        env = server_env(
            database_url=url,
            broker_url=redis.url,
            var_dir=tmp / "var",
            import_roots=[tmp / "audio"],
            # The stale-job sweep (issue 12, 'Worker loss'; quality.tasks.sweep_orphans on beat
            # every minute, where it exists) told to act within this test's settle time.
            extra={
                "REFRAIN_JOB_HEARTBEAT_SECONDS": "5",
                "REFRAIN_JOB_STALE_SECONDS": "20",
                "REFRAIN_JOB_QUEUED_STALE_SECONDS": "20",
                "REFRAIN_CONSENSUS_STALE_SECONDS": "20",
            },
        )
        a, b, c = django_run(
            "batch",
            env=env,
            calls=[
                [
                    "build_project",
                    {
                        "clips": 24,
                        "annotators": 0,
                        "audio_dir": str(tmp / "audio"),
                        "labelled_per_genre": 3,
                        "migrate": True,
                    },
                ],
                ["build_project", {"clips": 300, "annotators": 4, "blind": False}],
                [
                    "build_project",
                    {
                        "clips": 24,
                        "annotators": 0,
                        "audio_dir": str(tmp / "audio"),
                        "labelled_per_genre": 3,
                    },
                ],
            ],
        )
        phase("built")
        worker = Supervised(env, tmp / "worker.log")
        port = free_port()
        server = start_gunicorn(env=env, port=port, log=tmp / "gunicorn.log", workers=2)
        phase("gunicorn up")
        _wait("worker ready", lambda: worker.ready_count() >= 1, 120)
        phase("worker ready")

        def cycle_a() -> tuple[str, list[str]]:
            row = _sql(
                url,
                "SELECT status, steps_done FROM quality_qualitycycle WHERE project_id = %s",
                [a["project_id"]],
            )
            return (row[0][0], list(row[0][1])) if row else ("none", [])

        status, _, body = Api(port, a["admin_token"]).request(
            "POST", f"/api/v1/projects/{a['project_id']}/cycles"
        )
        if status != 202:
            raise ScenarioError(f"POST /cycles answered {status}: {body}")
        # Stop the broker once the cycle is inside its retrain step (features or training).
        _wait(
            "cycle A enters retrain",
            lambda: _sql(
                url,
                "SELECT 1 FROM active_learning_featureset WHERE project_id = %s",
                [a["project_id"]],
            ),
            120,
        )
        phase("cycle A in retrain")
        load = Load(port, b["project_id"], b["tokens"], b["truth"], b["labels"], think_s=(0.5, 1.5))
        load.give_up_s = 300
        threads = load.run()
        time.sleep(2)
        t_down = time.monotonic()
        redis.stop()
        phase("broker down")
        facts["a_at_stop"] = cycle_a()
        time.sleep(BROKER_OUTAGE_S / 3)
        t = time.monotonic()
        try:
            status, headers, body = Api(port, c["admin_token"]).request(
                "POST", f"/api/v1/projects/{c['project_id']}/cycles"
            )
            facts["c_request"] = {
                "status": status,
                "retry_after": headers.get("retry-after"),
                "content_type": headers.get("content-type"),
                "body": str(body)[:200],
                "seconds": round(time.monotonic() - t, 2),
            }
        except (OSError, http.client.HTTPException) as exc:
            facts["c_request"] = {"status": "connection", "body": repr(exc)}
        time.sleep(max(0.0, t_down + BROKER_OUTAGE_S - time.monotonic()))
        try:
            _wait("cycle A's retrain step ends", lambda: "retrain" in cycle_a()[1], 120)
            time.sleep(3)  # the step's end: its result, its ack, the next step's message
        except TimeoutError:
            raise ScenarioError(f"retrain did not end during the outage: {cycle_a()}") from None
        facts["a_at_restart"] = cycle_a()
        redis.start_again()
        t_up = time.monotonic()
        phase("broker up")
        facts["outage_s"] = round(t_up - t_down, 1)
        time.sleep(10)
        load.stop.set()
        for th in threads:
            th.join(timeout=120)
        phase("clients stopped")
        facts["b_acked"] = len(load.acked)
        facts["b_acked_during_outage"] = sum(t_down <= x[3] <= t_up for x in load.acked)
        facts["b_failures"] = load.failures
        facts["b_client_errors"] = load.client_errors

        # The work queued before and during the outage, left to finish by itself.
        def settled() -> bool:
            c_rows = _sql(
                url,
                "SELECT 1 FROM quality_qualitycycle WHERE project_id = %s "
                "AND status IN ('queued', 'running')",
                [c["project_id"]],
            )
            # Every opinion of B reflected in its clip's consensus (the sweep catches up those
            # whose update message was refused during the outage).
            behind = _sql(
                url,
                "SELECT count(*) FROM annotation_annotation a "
                "JOIN annotation_clip c ON c.id = a.clip_id "
                "LEFT JOIN quality_clipconsensus q ON q.clip_id = a.clip_id "
                "WHERE c.project_id = %s AND a.kind <> 'import' "
                "AND (q.id IS NULL OR q.computed_at < a.created_at)",
                [b["project_id"]],
            )[0][0]
            return (
                cycle_a()[0] in ("done", "failed")
                and not c_rows
                and redis.queued() == 0
                and behind == 0
            )

        try:
            facts["a_settle_s"] = round(_wait("settle", settled, SETTLE_S), 1)
        except TimeoutError:
            facts["a_settle_s"] = None
        phase("settled")
        time.sleep(3)  # the consensus updates of the last submits
        facts["queued_left"] = redis.queued()
        facts["worker_exits"] = worker.exits
        facts["a"], facts["c"], facts["b_annotations"], facts["b_consensus"] = django_run(
            "batch",
            env=env,
            calls=[
                ["cycle_facts", {"project_id": a["project_id"]}],
                ["cycle_facts", {"project_id": c["project_id"]}],
                ["verify_annotations", {"project_id": b["project_id"], "acked": load.acked}],
                ["verify_consensus", {"project_id": b["project_id"]}],
            ],
        )
        log = worker.log.read_text()
        facts["worker_warnings"] = sorted(
            {
                ln.split("] ", 1)[-1][:160]
                for ln in log.splitlines()
                if ("WARNING" in ln or "ERROR" in ln or "CRITICAL" in ln)
                and "Cannot connect" not in ln
            }
        )[:15]
        facts["worker_cycle_lines"] = [
            ln.split("] ", 1)[-1][:200]
            for ln in log.splitlines()
            if "refused callback publish" in ln or "cycle " in ln or "Connected to" in ln
        ][:20]
        phase("checked")
        print(json.dumps({k: v for k, v in facts.items() if k != "b_failures"}, indent=1)[:8000])
    except Exception:
        for name in ("worker.log", "gunicorn.log"):
            if (tmp / name).exists():
                print(f"--- {name}:\n" + (tmp / name).read_text()[-5000:])
        raise
    else:
        yield facts
    finally:
        if load is not None:
            load.stop.set()
        for th in threads:
            th.join(timeout=5)
        stop_process(server)
        if worker is not None:
            worker.stop()
        redis.stop()
        pg.stop()


@needs_postgres
@needs_redis
def test_broker_outage_in_flight_cycle_is_not_duplicated(broker_outage: dict) -> None:
    f = broker_outage
    assert f["a_at_stop"][0] == "running" and "retrain" not in f["a_at_stop"][1], f["a_at_stop"]
    a = f["a"]
    assert len(a["cycles"]) == 1, a
    assert [m[0] for m in a["model_versions"]] == ["done"], a["model_versions"]
    assert len(a["feature_sets"]) == 1, a
    assert a["quality_runs"] <= 1, a
    assert a["duplicate_task_keys"] == 0 and a["clips_with_two_live_issues"] == 0, a


@needs_postgres
@needs_redis
def test_broker_outage_in_flight_cycle_completes_by_itself(broker_outage: dict) -> None:
    f = broker_outage
    cycle = f["a"]["cycles"][0]
    assert cycle["status"] == "done", (cycle, f["a_settle_s"])
    assert cycle["steps_done"] == ["retrain", "detect", "route", "acquire"], cycle
    assert f["a"]["quality_runs"] == 1


@needs_postgres
@needs_redis
def test_broker_outage_submits_are_stored_exactly_once(broker_outage: dict) -> None:
    f = broker_outage
    assert not f["b_client_errors"], f["b_client_errors"]
    _annotation_checks(f["b_annotations"])
    # The submits went on through the outage: a broker is not needed to store a label ...
    assert f["b_acked_during_outage"] >= 4, f
    # ... and none of them failed for its want.
    assert [x for x in f["b_failures"] if x["status"] != "connection"] == []


@needs_postgres
@needs_redis
def test_broker_outage_consensus_catches_up_with_every_annotation(broker_outage: dict) -> None:
    consensus = broker_outage["b_consensus"]
    assert consensus["n_missing"] == 0 and consensus["n_stale_count"] == 0, consensus
    assert consensus["n_clip_scope_mismatch"] == 0, consensus


@needs_postgres
@needs_redis
def test_broker_outage_cycle_requested_during_it_is_not_left_stranded(
    broker_outage: dict,
) -> None:
    f = broker_outage
    cycles = f["c"]["cycles"]
    # Either the request was refused and nothing was stored, or the cycle ran, exactly once.
    assert len(cycles) <= 1, cycles
    if f["c_request"]["status"] == 202 or cycles:
        assert cycles and cycles[0]["status"] == "done", (f["c_request"], cycles)
        assert [m[0] for m in f["c"]["model_versions"]] == ["done"], f["c"]
