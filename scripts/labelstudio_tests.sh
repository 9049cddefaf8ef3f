#!/usr/bin/env bash
# `make test-labelstudio`: the live Label Studio tests (pytest -m labelstudio) as one stage.
#
# Installs Label Studio into its cached venv (scripts/labelstudio_service.sh install: the pinned
# versions of scripts/labelstudio-constraints.txt), starts it on a free loopback port with its own
# data dir under var/ (migrated once, then reused), runs the tests against it, and stops it, also
# when the tests fail. A Label Studio you run yourself (another LS_DATA) is not touched.
# Extra arguments go to pytest. Needs DATABASE_URL and CELERY_BROKER_URL as for `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
export LS_VENV="${LS_VENV:-$PWD/var/labelstudio-venv}"
export LS_DATA="${LS_TEST_DATA:-$PWD/var/labelstudio-test-data}"
export LS_PORT="${LS_TEST_PORT:-$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
svc=scripts/labelstudio_service.sh
"$svc" install
"$svc" stop >/dev/null  # a server an interrupted run left on this data dir (maybe another port)
trap '"$svc" stop' EXIT
"$svc" start
eval "$("$svc" env)"
.venv/bin/pytest -q -m labelstudio -p no:cacheprovider tests/annotation/integrations/labelstudio \
  tests/active_learning/integrations/labelstudio_ml "$@"
echo "test-labelstudio: Label Studio stage finished in $((SECONDS - start)) s"
