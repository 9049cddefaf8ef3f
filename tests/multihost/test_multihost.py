"""Refrain on several hosts with no shared disk (issue 16).

PostgreSQL, Redis and an S3 server (moto's, the stand-in for S3 or MinIO) listen on a bridge in the
root network namespace. The web (gunicorn), a ``cpu`` worker and a ``gpu``-queue worker each run in
their own network namespace with their own empty working directory; clip audio, served copies,
visuals, feature sets and models live only in the buckets. The test, as an admin and two annotators
over HTTP:

1. puts tones in a bucket (two of them under the wrong genre) and imports them on the ``cpu`` worker;
2. starts a feature extraction, kills the ``cpu`` worker in the middle of a chunk, and restarts it
   on another host (new namespace, new empty directory): the sweep resumes the work there;
3. runs a relabel cycle (retrain on the ``gpu`` worker, detection on the ``cpu`` one, routing) and
   answers the routed relabels over HTTP;
4. wipes every worker's directory and runs a second cycle, which finds everything it needs;
5. checks that each artifact is in the bucket exactly once and that nothing was left half-written.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.multihost.network import Host, Network, kill_group, netns_available
from tests.security.stack import (
    Api,
    PrivatePostgres,
    PrivateRedis,
    server_env,
    stop_process,
)

pytestmark = [pytest.mark.multihost, pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
KEY_ID, SECRET, REGION = "refrain-mh", "refrain-mh-secret", "us-east-1"
GENRES = {"Rock/Punk": 220.0, "Electronic/House": 660.0, "Jazz/Bebop": 1500.0}
PER_GENRE = 7
#: The tones put under the wrong genre's folder: (genre of the tone, folder it is filed under).
PLANTED = [("Rock/Punk", "Jazz/Bebop"), ("Jazz/Bebop", "Electronic/House")]
WAIT_S = 300
WEB_PORT = 8000


def _skip_reason() -> str:
    reason = netns_available()
    if reason:
        return reason
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return "moto[server] is not installed"
    return ""


def _until(what: str, cond: Callable[[], Any], *procs: Any, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        for proc in procs:
            assert proc.poll() is None, f"a process died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.3)
    return value


class Cluster:
    """The shared services, the hosts and the environment every process gets."""

    def __init__(self, tmp: Path) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per S3 request otherwise
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.faults = tmp / "faults"  # test instrumentation only: where a paused worker says so
        self.faults.mkdir()
        self.net = Network(root=tmp / "hosts")
        gw = self.net.gateway
        self.pg = PrivatePostgres(listen=gw).start()
        self.redis = PrivateRedis(tmp / "redis", bind=gw).start()
        self.s3 = ThreadedMotoServer(ip_address=gw, port=0, verbose=False)
        self.s3.start()
        host, port = self.s3.get_host_and_port()
        self.s3_url = f"http://{host}:{port}"
        tag = uuid.uuid4().hex[:8]
        self.clips_bucket, self.media_bucket, self.artifacts_bucket = (
            f"clips-{tag}",
            f"media-{tag}",
            f"artifacts-{tag}",
        )
        for bucket in (self.clips_bucket, self.media_bucket, self.artifacts_bucket):
            self.client().create_bucket(Bucket=bucket)
        self.db_url = self.pg.create_database("refrain_multihost")
        self.remote_db_url = self.db_url.replace("127.0.0.1", gw)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """A process's whole configuration: shared services by address, its own directory."""
        return server_env(
            database_url=self.remote_db_url,
            broker_url=f"redis://{self.net.gateway}:{self.redis.port}/0",
            var_dir=host.workdir / "var",
            import_roots=[host.workdir / "no-imports"],
            extra={
                "HOME": str(host.workdir),
                "TMPDIR": str(host.workdir),
                "ALLOWED_HOSTS": host.ip,
                "REFRAIN_MEDIA_STORAGE": "s3",
                "REFRAIN_MEDIA_BUCKET": self.media_bucket,
                "REFRAIN_ARTIFACT_STORAGE": f"s3://{self.artifacts_bucket}/refrain",
                "AWS_S3_ENDPOINT_URL": self.s3_url,
                "AWS_ACCESS_KEY_ID": KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_S3_REGION_NAME": REGION,
                "REFRAIN_FAULT_DIR": str(self.faults),
                "REFRAIN_JOB_HEARTBEAT_SECONDS": "1",
                **extra,
            },
        )

    def django(
        self, host: Host, function: str, module: str = "tests.multihost.django_side", **kwargs: Any
    ) -> Any:
        """``module.function(**kwargs)`` in a Django process on ``host``; its JSON result."""
        args = host.workdir / f"args-{uuid.uuid4().hex[:6]}.json"
        args.write_text(json.dumps(kwargs))
        try:
            out = host.run([PY, "-m", module, function, str(args)], env=self.env(host)).stdout
        finally:
            args.unlink(missing_ok=True)
        return json.loads(out.strip().splitlines()[-1])

    def worker(self, host: Host, queues: str, *, pause_at: str = "") -> Any:
        argv = [
            PY, "-m", "celery", "-A", "refrain", "worker", "-Q", queues, "-c", "1",
            "-n", f"{host.name}-{os.getpid()}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        env = self.env(host, REFRAIN_FAULT_PAUSE_AT=pause_at)
        return host.popen(argv, env=env, log=self.logs / f"worker-{host.name}.log")

    def web(self, host: Host) -> Any:
        argv = [
            str(Path(PY).with_name("gunicorn")), "--workers", "2", "--bind",
            f"{host.ip}:{WEB_PORT}", "--timeout", "120", "--chdir", str(host.workdir),
            "refrain.wsgi:application",
        ]  # fmt: skip
        proc = host.popen(argv, env=self.env(host), log=self.logs / "gunicorn.log")
        api = Api(WEB_PORT, "", host=host.ip)

        def answers() -> bool:
            try:
                return api.request("GET", "/livez")[0] == 200
            except OSError:
                return False

        _until("gunicorn to answer", answers, proc, timeout=120)
        return proc

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return list(conn.execute(query, params or []).fetchall())

    def close(self) -> None:
        self.net.close()
        with_suppress(self.s3.stop)
        with_suppress(self.redis.stop)
        with_suppress(self.pg.stop)

    def dump_logs(self) -> None:
        for log in sorted(self.logs.glob("*.log")):
            print(f"--- {log.name}:\n{log.read_text(errors='replace')[-4000:]}")


def with_suppress(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup goes on whatever one part says
        print(f"cleanup: {fn}: {exc!r}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="refrain-multihost-"))
    c = Cluster(tmp)
    try:
        yield c
    except BaseException:
        c.dump_logs()
        raise
    finally:
        c.close()


def _put_tones(cluster: Cluster) -> dict[str, str]:
    """Tones in the clips bucket under ``incoming/<genre>/``; the true genre of each object key."""
    from tests.factories import write_tone

    truth: dict[str, str] = {}
    work = cluster.tmp / "tones"
    wrong = dict(PLANTED)
    for g, (genre, freq) in enumerate(GENRES.items()):
        for i in range(PER_GENRE):
            wav = write_tone(work / f"{g}-{i}.wav", freq=freq * (1 + 0.01 * i), seconds=0.5)
            # The first tone of a planted genre is filed under another genre's folder.
            folder = wrong[genre] if i == 0 and genre in wrong else genre
            key = f"incoming/{folder}/{g}-{i}.wav"
            cluster.client().upload_file(str(wav), cluster.clips_bucket, key)
            truth[key] = genre
    return truth


def _answer_tasks(api: Api, project_id: int, truth_by_clip: dict[int, str], who: int) -> int:
    """Answer every task this annotator is given, truthfully; how many were answered."""
    answered = 0
    while True:
        status, _, task = api.request("POST", f"/api/v1/projects/{project_id}/tasks/next")
        if status == 204:
            return answered
        assert status == 200, (status, task)
        assert task["others"] is None  # blind: nobody else's label comes with the task
        label = truth_by_clip[int(task["clip"]["id"])]
        body = {"labels": [label], "idempotency_key": f"mh-{who}-{task['task_id']}"}
        status, _, ann = api.request("POST", task["submit_url"], body)
        assert status in (200, 201), (status, ann)
        answered += 1


def _cycle(cluster: Cluster, admin: Api, project_id: int, *procs: Any) -> dict[str, Any]:
    status, _, body = admin.request("POST", f"/api/v1/projects/{project_id}/cycles")
    assert status == 202, (status, body)
    cycle_id = body["id"]

    def finished() -> Any:
        rows = cluster.sql(
            "SELECT status, steps_done, error FROM quality_qualitycycle WHERE id = %s", [cycle_id]
        )
        return rows[0] if rows and rows[0][0] in ("done", "failed") else None

    status_, steps, error = _until(f"cycle {cycle_id}", finished, *procs)
    return {"id": cycle_id, "status": status_, "steps": list(steps), "error": error}


def test_a_cycle_runs_across_hosts_with_no_shared_disk(cluster: Cluster) -> None:
    net = cluster.net
    web, cpu, gpu = net.add_host("web"), net.add_host("cpu"), net.add_host("gpu")
    truth_by_key = _put_tones(cluster)

    web.run([PY, str(ROOT / "manage.py"), "migrate", "--noinput", "-v0"], env=cluster.env(web))
    built = cluster.django(
        web, "build_project", module="tests.security.stack", clips=0, annotators=2
    )
    project_id = built["project_id"]
    gunicorn = cluster.web(web)
    gpu_worker = cluster.worker(gpu, "gpu,default")
    cpu_worker = cluster.worker(cpu, "cpu", pause_at="features.chunk:1")
    admin = Api(WEB_PORT, built["admin_token"], host=web.ip)
    annotators = [Api(WEB_PORT, t, host=web.ip) for t in built["tokens"]]

    # 1. Import from the bucket on the cpu worker.
    job = cluster.django(
        web, "import_from_bucket", project_id=project_id,
        uri=f"s3://{cluster.clips_bucket}/incoming",
    )["import_job"]  # fmt: skip

    def imported() -> Any:
        rows = cluster.sql("SELECT status, error FROM annotation_importjob WHERE id = %s", [job])
        return rows[0] if rows[0][0] in ("done", "failed") else None

    assert _until("the bucket import", imported, cpu_worker, gunicorn)[0] == "done"
    keys = cluster.django(web, "clip_keys", project_id=project_id)
    assert sorted(k.split("/", 1)[1] for k in keys.values()) == sorted(truth_by_key)
    truth_by_clip = {int(cid): truth_by_key[k.split("/", 1)[1]] for cid, k in keys.items()}
    ready = cluster.sql(
        "SELECT count(*) FROM annotation_clip WHERE project_id = %s AND status = 'ready'",
        [project_id],
    )[0][0]
    assert ready == len(truth_by_key)

    # 2. Feature extraction; the cpu worker is killed in its second chunk and comes back elsewhere.
    fs = cluster.django(web, "features_start", project_id=project_id, chunk_size=4)["feature_set"]
    reached = cluster.faults / "features.chunk:1.reached"
    _until("the cpu worker to stand in chunk 1", reached.exists, cpu_worker)
    kill_group(cpu_worker)
    assert cluster.django(web, "sweep") == [["features", fs, "resumed"]]
    cpu2 = net.add_host("cpu2")
    cpu_worker = cluster.worker(cpu2, "cpu")

    def extracted() -> Any:
        rows = cluster.sql(
            "SELECT status, n_done, attempts, error FROM active_learning_featureset WHERE id = %s",
            [fs],
        )
        return rows[0] if rows[0][0] in ("done", "failed") else None

    status, n_done, attempts, error = _until("the resumed extraction", extracted, cpu_worker)
    assert (status, n_done, attempts) == ("done", len(truth_by_key), 2), error

    # 3. A cycle across the hosts, then the routed relabels answered over HTTP.
    first = _cycle(cluster, admin, project_id, cpu_worker, gpu_worker, gunicorn)
    assert first["status"] == "done", first
    assert first["steps"] == ["retrain", "detect", "route", "acquire"], first
    routed = cluster.sql(
        "SELECT clip_id FROM quality_labelissue WHERE project_id = %s AND status = 'routed'",
        [project_id],
    )
    assert routed, "the cycle routed no suspect"
    # Each answer closes its issue once the consensus update it triggers has run on a worker
    # (after the submit's commit, on the broker): wait for that, answering any task it adds.
    answered = 0

    def routed_left() -> int:
        answer = sum(
            _answer_tasks(api, project_id, truth_by_clip, who) for who, api in enumerate(annotators)
        )
        nonlocal answered
        answered += answer
        return cluster.sql(
            "SELECT count(*) FROM quality_labelissue WHERE project_id = %s AND status = 'routed'",
            [project_id],
        )[0][0]

    _until("the routed issues to close", lambda: routed_left() == 0, cpu_worker, gpu_worker)
    assert answered >= len(routed)

    # 4. Every worker's disk wiped between two cycles: nothing is lost.
    for proc in (cpu_worker, gpu_worker):
        stop_process(proc)
    for host in (cpu, cpu2, gpu):
        host.wipe()
    gpu_worker = cluster.worker(gpu, "gpu,default")
    cpu_worker = cluster.worker(cpu2, "cpu")
    second = _cycle(cluster, admin, project_id, cpu_worker, gpu_worker, gunicorn)
    assert second["status"] == "done", second

    # 5. Each artifact in the bucket exactly once, nothing half-written.
    facts = cluster.django(web, "artifact_facts", project_id=project_id)
    listed = [
        o["Key"]
        for page in cluster.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=cluster.artifacts_bucket)
        for o in page.get("Contents", [])
    ]
    print(json.dumps({k: len(v) for k, v in facts.items()} | {"artifact_objects": len(listed)}))
    # Rows name a file (features/fs_1.npy) or a folder (model_2); the objects of one artifact are
    # that file, its siblings of the same stem (fs_1.json, fs_1.plan.json) or what the folder holds.
    owned = [f"refrain/{k}" for k in [*facts["feature_sets"], *facts["models"]]]
    assert all(owned) and len(owned) == len(set(owned)), owned

    def owner(key: str) -> list[str]:
        return [
            o
            for o in owned
            if key == o or key.startswith(o + "/") or key.startswith(o.rsplit(".", 1)[0] + ".")
        ]

    assert len(listed) == len(set(listed))
    assert [k for k in listed if len(owner(k)) != 1] == [], "objects no row owns, or two do"
    assert [o for o in owned if not any(o in owner(k) for k in listed)] == [], "rows without files"
    # Each clip's tag-free copy and its visuals (made on the cpu worker at import) in the media bucket.
    served = facts["served_keys"]
    assert len(served) == len(truth_by_key) and set(served) <= set(facts["media_keys"])
    for key in served:
        sha = key.rsplit("/", 1)[1].split(".")[0]
        assert {f"derived/{sha}-0-0.png", f"derived/{sha}-0-0.json"} <= set(facts["media_keys"])
