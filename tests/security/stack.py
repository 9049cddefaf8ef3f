"""Real processes for the fault tests and the soak bench: a private PostgreSQL, a private Redis,
gunicorn serving the app, a bearer-token HTTP client, and the Django-side builders and checks
(run in the process whose ``DATABASE_URL`` points at the database under test).

Nothing here touches the machine's shared PostgreSQL (5432) or Redis (6379) except where a caller
passes their URL (the soak bench uses a dedicated database on the shared server).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import suppress
from glob import glob
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 15) -> None:
    """SIGTERM the process (its group when it leads one), then SIGKILL what is left."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# --- a private PostgreSQL -------------------------------------------------------------------------


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` in ``root`` on a free loopback port; run as ``postgres`` under root
    (initdb refuses root). Trust authentication, loopback only, fsync off (tests, not durability:
    a ``-m fast`` restart checkpoints, so committed rows survive it)."""

    def __init__(self, *, listen: str = "") -> None:
        """``listen``: an address besides loopback to accept connections on (trust from its /24),
        for clients in other network namespaces (tests/multihost)."""
        self.listen = listen
        bins = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(bins[-1]).parent
        # Its own folder under the system temp dir: pytest's tmp_path (mode 0700, root's) is not
        # reachable for the ``postgres`` account.
        self.root = Path(tempfile.mkdtemp(prefix="refrain-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            [*self._as_postgres, *args], timeout=timeout, capture_output=True, text=True
        )
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} {args[1]} failed: {proc.stderr[-2000:]}\n{log}")

    def start(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        addresses = ",".join(["127.0.0.1", *([self.listen] if self.listen else [])])
        if self.listen:
            net = ".".join(self.listen.split(".")[:3]) + ".0/24"
            with (self.data / "pg_hba.conf").open("a") as f:
                f.write(f"host all all {net} trust\n")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '{addresses}'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
                "max_connections = 100\n"
            )
        self._ctl("start")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            action,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            *extra,
            timeout=90,
        )

    def stop_fast(self) -> None:
        """``pg_ctl stop -m fast``: sessions cut, new connections refused until :meth:`start_again`."""
        self._ctl("stop", "-m", "fast")

    def start_again(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is cut, then the server comes back."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Stop the server if it runs, and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            with suppress(subprocess.SubprocessError, RuntimeError):
                self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"


# --- a private Redis ------------------------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on a free loopback port with an append-only file in ``root``, so a stop and
    a start keep the queued messages (as a production broker's persistence does)."""

    def __init__(self, root: Path, *, bind: str = "127.0.0.1") -> None:
        self.root = root
        self.bind = bind
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            self.bind,
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            # Off only when bound to a test network's address (tests/multihost): protected mode
            # refuses every client not on loopback when no password is set.
            "--protected-mode",
            "yes" if self.bind == "127.0.0.1" else "no",
        ]
        log = (self.root / "redis.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, 20, self.proc, host=self.bind)
        return self

    def start_again(self) -> None:
        """Start on the same port and folder: what the append-only file kept is queued again."""
        self.start()

    def queued(self) -> int:
        """Messages waiting in the Celery queues (unacknowledged ones not counted)."""
        import redis

        client = redis.Redis(host=self.bind, port=self.port, socket_timeout=5)
        try:
            return sum(int(client.llen(q)) for q in ("default", "cpu", "gpu"))
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits; clients get connection refused."""
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None


# --- gunicorn and Celery --------------------------------------------------------------------------


def server_env(
    *,
    database_url: str,
    broker_url: str,
    var_dir: Path,
    import_roots: list[Path] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the servers, workers and Django helpers of one stack.

    Not a deployment (``REFRAIN_ENV`` ``test`` under pytest, else ``development``: plain HTTP on
    loopback) but run as one otherwise (``DEBUG`` off, its own ``SECRET_KEY``). Clip audio is read
    only inside ``REFRAIN_IMPORT_ROOTS``, so the folders where the builders write tones go there."""
    import secrets

    env = {
        **os.environ,
        "REFRAIN_ENV": os.environ.get("REFRAIN_ENV") or "development",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "REFRAIN_IMPORT_ROOTS": ",".join(str(p) for p in import_roots or [var_dir / "imports"]),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": "django-db",
        "DJANGO_SETTINGS_MODULE": "refrain.settings",
        "REFRAIN_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "DEBUG": "False",
        "PYTHONPATH": str(ROOT),
        **(extra or {}),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def start_gunicorn(
    *,
    env: Mapping[str, str],
    port: int,
    log: Path,
    workers: int = 2,
    threads: int = 1,
    app: str = "refrain.wsgi:application",
    timeout: float = 90,
) -> subprocess.Popen[bytes]:
    """gunicorn on 127.0.0.1:``port``; returns once the OpenAPI schema answers 200."""
    cmd = [
        str(Path(PY).with_name("gunicorn")),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--backlog",
        "1024",
        "--timeout",
        "120",
        "--graceful-timeout",
        "10",
        "--chdir",
        str(ROOT),
        app,
    ]
    out = log.open("ab")
    proc = subprocess.Popen(
        cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        with suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/v1/openapi.json")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"gunicorn did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def start_worker(
    *,
    env: Mapping[str, str],
    log: Path,
    queues: str = "default,cpu,gpu",
    concurrency: int = 1,
    name: str = "fault",
    beat: bool = False,
) -> subprocess.Popen[bytes]:
    """A ``celery worker`` process in its own session (stop it with :func:`stop_worker`)."""
    cmd = [
        PY,
        "-m",
        "celery",
        "-A",
        "refrain",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}-{os.getpid()}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *(["--beat", "--schedule", str(log.with_suffix(".beat"))] if beat else []),
    ]
    out = log.open("ab")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    out.close()
    return proc


def stop_worker(proc: subprocess.Popen[bytes] | None) -> None:
    """Warm shutdown (SIGTERM to the main process only), then the whole group killed."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def django_run(
    function: str, *, env: Mapping[str, str], timeout: float = 300, **kwargs: Any
) -> Any:
    """Call ``tests.security.stack.<function>(**kwargs)`` in a fresh Django process on ``env``'s
    database (migrating it first when ``migrate=True``); its JSON result back."""
    # The arguments go through a file: thousands of acknowledged submits exceed the argv limit.
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(kwargs, f)
    try:
        proc = subprocess.run(
            [PY, "-m", "tests.security.stack", function, f.name],
            cwd=ROOT,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{function} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the HTTP client ------------------------------------------------------------------------------


class Api:
    """One keep-alive HTTP connection with a bearer token (one per client thread)."""

    def __init__(self, port: int, token: str, timeout: float = 30, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        """Status, headers and JSON (or text) body. Connection failures raise ``OSError`` or
        ``http.client.HTTPException``; the connection is then dropped and reopened next time."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = raw[:300].decode(errors="replace")
        return r.status, hdrs, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# --- Django side: run through django_run (python -m tests.security.stack <function> <json>) -------

GENRE_FREQ = {
    "Rock/Punk": 220.0,
    "Rock/Metal": 260.0,
    "Electronic/House": 660.0,
    "Electronic/Techno": 780.0,
    "Jazz/Bebop": 1500.0,
    "Jazz/Free Jazz": 1800.0,
}


def build_project(
    *,
    clips: int,
    annotators: int,
    overlap: int = 1,
    audio_dir: str | None = None,
    seconds: float = 0.5,
    retrain_every: int = 0,
    blind: bool = True,
    labelled_per_genre: int = 0,
    migrate: bool = False,
) -> dict[str, Any]:
    """A project with ``clips`` ready clips (each with a label task), ``annotators`` annotators
    with API tokens and an admin with one. With ``audio_dir`` each clip is a real tone whose pitch
    is its genre (``truth``), so a cycle can train; ``labelled_per_genre`` clips of each genre
    get a seed annotation by a ``seed`` account."""
    from django.contrib.auth import get_user_model

    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    from annotation.models import Membership
    from annotation.selectors import taxonomy_index_cached
    from annotation.services.annotations import annotation_create
    from annotation.services.enqueue import Manual, task_enqueue
    from annotation.services.tokens import api_token_create
    from tests.factories import ClipFactory, ProjectFactory, make_taxonomy_version, write_tone

    User = get_user_model()
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    version = make_taxonomy_version(list(GENRE_FREQ), name=f"Fault genres {tag}")
    project = ProjectFactory(
        name=f"Fault project {tag}",
        slug=f"fault-{tag}",
        taxonomy_version=version,
        overlap=overlap,
        blind=blind,
        loop_policy__retrain_every=retrain_every,
        loop_policy__relabel_budget=4,
        loop_policy__acquisition_batch_size=4,
    )
    genres = list(GENRE_FREQ)
    truth: dict[int, str] = {}
    clip_ids = []
    for i in range(clips):
        genre = genres[i % len(genres)]
        kwargs: dict[str, Any] = {"project": project, "external_id": f"{tag}-{i}"}
        if audio_dir:
            wav = write_tone(
                Path(audio_dir) / f"{tag}-{i}.wav",
                freq=GENRE_FREQ[genre] * (1 + 0.004 * (i // len(genres))),
                seconds=seconds,
            )
            kwargs.update(storage_key=str(wav), duration_s=seconds)
        clip = ClipFactory(**kwargs)
        truth[clip.pk] = genre
        clip_ids.append(clip.pk)
    if labelled_per_genre:
        seed = User.objects.create(username=f"seed-{tag}", password="!")
        Membership.objects.create(project=project, user=seed, role=Membership.Role.ANNOTATOR)
        index = taxonomy_index_cached(version)
        seen: dict[str, int] = {}
        for cid, genre in truth.items():
            if seen.get(genre, 0) >= labelled_per_genre:
                continue
            seen[genre] = seen.get(genre, 0) + 1
            from annotation.models import Clip

            annotation_create(
                clip=Clip.objects.get(pk=cid),
                index=index,
                explicit_node_ids=[index.lookup(genre).id],  # type: ignore[union-attr]
                source=f"user:{seed.username}",
                user=seed,
            )
    task_enqueue(project=project, sources=Manual.for_clips(clip_ids))
    tokens = []
    for i in range(annotators):
        user = User.objects.create(username=f"ann{i}-{tag}", password="!")
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        tokens.append(api_token_create(user=user, name="fault")[1])
    admin = User.objects.create(username=f"admin-{tag}", password="!")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    return {
        "project_id": project.pk,
        "tokens": tokens,
        "admin_token": api_token_create(user=admin, name="fault")[1],
        "truth": {str(k): v for k, v in truth.items()},
        "labels": genres,
    }


def verify_annotations(*, project_id: int, acked: list[list[Any]]) -> dict[str, Any]:
    """Every acknowledged submit stored exactly once, nothing stored that was not acknowledged,
    no duplicate task or assignment, each task's count equal to its annotations (by query).

    ``acked``: ``[annotation_id, task_id, idempotency_key]`` per acknowledged submit (a replayed
    acknowledgement of the same key may repeat)."""
    from django.db import connection

    acked_ids = {int(a[0]) for a in acked}
    keys = {a[2] for a in acked}
    with connection.cursor() as cur:

        def one(sql: str, params: list[Any]) -> int:
            cur.execute(sql, params)
            return int(cur.fetchone()[0])

        cur.execute(
            """SELECT n.id, n.task_id, n.idempotency_key FROM annotation_annotation n
               JOIN annotation_clip c ON c.id = n.clip_id
               WHERE c.project_id = %s AND n.task_id IS NOT NULL""",
            [project_id],
        )
        stored = cur.fetchall()
        stored_ids = {r[0] for r in stored}
        by_key: dict[str, int] = {}
        for _, _, key in stored:
            by_key[key] = by_key.get(key, 0) + 1
        out: dict[str, Any] = {
            "acknowledged": len(acked_ids),
            "stored": len(stored_ids),
            "acknowledged_missing": sorted(acked_ids - stored_ids)[:20],
            "stored_not_acknowledged": sorted(stored_ids - acked_ids)[:20],
            "acked_keys_not_stored": sorted(keys - set(by_key))[:20],
            "keys_stored_twice": sorted(k for k, n in by_key.items() if n > 1)[:20],
            "annotations_per_assignment_over_1": one(
                """SELECT count(*) FROM (SELECT assignment_id FROM annotation_annotation n
                   JOIN annotation_clip c ON c.id = n.clip_id
                   WHERE c.project_id = %s AND assignment_id IS NOT NULL
                   GROUP BY 1 HAVING count(*) > 1) d""",
                [project_id],
            ),
            "clip_twice_to_one_annotator": one(
                """SELECT count(*) FROM (SELECT a.user_id, t.clip_id FROM annotation_assignment a
                   JOIN annotation_task t ON t.id = a.task_id WHERE t.project_id = %s
                   GROUP BY 1, 2 HAVING count(*) > 1) d""",
                [project_id],
            ),
            "duplicate_tasks": one(
                """SELECT count(*) FROM (SELECT clip_id, kind, reason FROM annotation_task
                   WHERE project_id = %s GROUP BY 1, 2, 3 HAVING count(*) > 1) d""",
                [project_id],
            ),
            "tasks_count_mismatch": one(
                """SELECT count(*) FROM annotation_task t WHERE t.project_id = %s AND t.n_submitted
                   <> (SELECT count(*) FROM annotation_annotation n WHERE n.task_id = t.id)""",
                [project_id],
            ),
            "tasks_over_overlap": one(
                "SELECT count(*) FROM annotation_task WHERE project_id = %s AND n_submitted > overlap",
                [project_id],
            ),
            "submitted_without_annotation": one(
                """SELECT count(*) FROM annotation_assignment a JOIN annotation_task t
                   ON t.id = a.task_id WHERE t.project_id = %s AND a.status = 'submitted'
                   AND NOT EXISTS (SELECT 1 FROM annotation_annotation n
                   WHERE n.assignment_id = a.id)""",
                [project_id],
            ),
        }
    return out


def verify_consensus(*, project_id: int) -> dict[str, Any]:
    """Each labelled clip's stored consensus against its annotations, recomputed now.

    ``n_annotations`` must equal the clip's count of annotators (their latest label set each) for
    every clip. A ``clip``-scope row (written after a new annotation, from that clip alone) must
    equal the same computation redone with the row's model version. A ``project``-scope row (the
    cycle's pass, with annotator weights from the whole project) is recomputed the same way;
    differences there are reported apart, since annotations on *other* clips after the pass move
    the weights without touching this clip."""
    from annotation.models import Project
    from annotation.selectors import taxonomy_index_cached
    from quality.models import ClipConsensus
    from quality.services.consensus import _consensus, _rows

    project = Project.objects.select_related("taxonomy_version").get(pk=project_id)
    index = taxonomy_index_cached(project.taxonomy_version)
    found = _consensus(project=project, index=index, clip_ids=None, mv=None)
    counts: dict[int, int] = {}
    if found is not None:
        la = found[0]
        for c in la.annotations.clip:
            cid = la.clip_ids[int(c)]
            counts[cid] = counts.get(cid, 0) + 1
    stored = {c.clip_id: c for c in ClipConsensus.objects.filter(project=project)}
    missing = sorted(set(counts) - set(stored))
    stale = sorted(c for c, row in stored.items() if row.n_annotations != counts.get(c, 0))
    clip_mismatch, project_drift = [], []
    project_pass: dict[int | None, dict[int, list[int]]] = {}
    for cid, row in stored.items():
        if cid not in counts:
            continue
        mv = row.model_version
        if row.scope == "clip":
            f = _consensus(project=project, index=index, clip_ids=[cid], mv=mv)
            assert f is not None
            want = _rows(project=project, index=index, la=f[0], res=f[1], mv=mv, scope="clip")
            if sorted(want[0].node_ids) != sorted(row.node_ids):
                clip_mismatch.append(cid)
        else:
            key = mv.pk if mv else None
            if key not in project_pass:
                f = _consensus(project=project, index=index, clip_ids=None, mv=mv)
                assert f is not None
                rows = _rows(project=project, index=index, la=f[0], res=f[1], mv=mv, scope="p")
                project_pass[key] = {r.clip_id: sorted(r.node_ids) for r in rows}
            if project_pass[key].get(cid) != sorted(row.node_ids):
                project_drift.append(cid)
    scopes: dict[str, int] = {}
    for row in stored.values():
        scopes[row.scope] = scopes.get(row.scope, 0) + 1
    return {
        "labelled_clips": len(counts),
        "consensus_rows": len(stored),
        "scopes": scopes,
        "missing": missing[:20],
        "n_missing": len(missing),
        "stale_count": stale[:20],
        "n_stale_count": len(stale),
        "clip_scope_mismatch": clip_mismatch[:20],
        "n_clip_scope_mismatch": len(clip_mismatch),
        "project_scope_drift": len(project_drift),
    }


def cycle_facts(*, project_id: int) -> dict[str, Any]:
    """A project's cycles, model versions, quality runs, tasks and live issues, for the checks
    that nothing was done twice."""
    from django.db.models import Count

    from active_learning.models import FeatureSet, ModelVersion
    from annotation.models import Task
    from quality.models import LabelIssue, QualityCycle, QualityRun

    cycles = [
        {
            "id": c.pk,
            "status": c.status,
            "attempts": c.attempts,
            "steps_done": list(c.steps_done),
            "error": c.error[:300],
            "model_version": c.model_version_id,
        }
        for c in QualityCycle.objects.filter(project_id=project_id).order_by("pk")
    ]
    dup_keys = (
        Task.objects.filter(project_id=project_id, dedupe_key__isnull=False)
        .values("dedupe_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    live_twice = (
        LabelIssue.objects.filter(project_id=project_id, status__in=LabelIssue.LIVE)
        .values("clip_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    return {
        "cycles": cycles,
        "model_versions": [
            [status, task_id, error[:300]]
            for status, task_id, error in ModelVersion.objects.filter(
                project_id=project_id
            ).values_list("status", "task_id", "error")
        ],
        "feature_sets": list(
            FeatureSet.objects.filter(project_id=project_id).values_list("status", flat=True)
        ),
        "quality_runs": QualityRun.objects.filter(project_id=project_id).count(),
        "tasks": Task.objects.filter(project_id=project_id).count(),
        "duplicate_task_keys": dup_keys,
        "clips_with_two_live_issues": live_twice,
    }


def batch(*, calls: list[list[Any]]) -> list[Any]:
    """Several of the functions above in one process (a Django start costs seconds here)."""
    return [globals()[name](**kwargs) for name, kwargs in calls]


def _main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    django.setup()
    function, kwargs = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    result = globals()[function](**kwargs)
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
