#!/usr/bin/env bash
# Label Studio 1.23 as a separate local service for the integration tests and demos.
#
# It cannot share Refrain's virtualenv (it pins its own Django, DRF and more), so it lives in its own
# venv under var/. Usage:
#
#   scripts/labelstudio_service.sh install   # venv + the label-studio pinned in labelstudio-constraints.txt
#   scripts/labelstudio_service.sh start     # headless on 127.0.0.1:$LS_PORT, waits until it answers
#   scripts/labelstudio_service.sh env       # prints LABEL_STUDIO_URL / LABEL_STUDIO_TOKEN exports
#   scripts/labelstudio_service.sh stop
#   scripts/labelstudio_service.sh status
#
# Then: eval "$(scripts/labelstudio_service.sh env)" && pytest -m labelstudio
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LS_VENV="${LS_VENV:-$ROOT/var/labelstudio-venv}"
LS_DATA="${LS_DATA:-$ROOT/var/labelstudio-data}"
LS_PORT="${LS_PORT:-8089}"
LS_CONSTRAINTS="$ROOT/scripts/labelstudio-constraints.txt"
LS_VERSION="$(sed -n 's/^label-studio==//p' "$LS_CONSTRAINTS")"
LS_USERNAME="${LS_USERNAME:-refrain@example.org}"
LS_PASSWORD="${LS_PASSWORD:-refrain-ls-pass}"
# A legacy token (40 hex chars) for the default user; change it anywhere that is not a test box.
LS_TOKEN="${LS_TOKEN:-0123456789abcdef0123456789abcdef01234567}"
LS_START_TIMEOUT="${LS_START_TIMEOUT:-300}"
PIDFILE="$LS_DATA/labelstudio.pid"
LOGFILE="$LS_DATA/labelstudio.log"

cmd_install() {
  # Cached: the venv is reused while its stamp matches the constraints file (every package pinned).
  local stamp="$LS_VENV/.refrain-constraints.sha256" want
  want="$(sha256sum "$LS_CONSTRAINTS" | cut -d' ' -f1)"
  if [[ -x "$LS_VENV/bin/label-studio" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV"
    return 0
  fi
  local start=$SECONDS
  if [[ ! -x "$LS_VENV/bin/python" ]]; then
    python3.11 -m venv "$LS_VENV"
  fi
  local uv="${UV:-$ROOT/.tools/bin/uv}"
  if [[ -x "$uv" ]]; then
    "$uv" pip install --quiet --python "$LS_VENV/bin/python" -c "$LS_CONSTRAINTS" \
      "label-studio==$LS_VERSION"
  else
    "$LS_VENV/bin/pip" install --quiet -c "$LS_CONSTRAINTS" "label-studio==$LS_VERSION"
  fi
  echo "$want" >"$stamp"
  echo "label-studio $LS_VERSION installed in $LS_VENV in $((SECONDS - start)) s"
}

is_running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

cmd_start() {
  if is_running; then
    echo "already running (pid $(cat "$PIDFILE")) on http://127.0.0.1:$LS_PORT"
    return 0
  fi
  [[ -x "$LS_VENV/bin/label-studio" ]] || { echo "not installed: run '$0 install'" >&2; exit 1; }
  mkdir -p "$LS_DATA"
  local start=$SECONDS
  # Telemetry off; loopback allowed so LS can call Refrain's webhook and audio URLs on 127.0.0.1.
  env \
    LABEL_STUDIO_BASE_DATA_DIR="$LS_DATA" \
    LABEL_STUDIO_USERNAME="$LS_USERNAME" \
    LABEL_STUDIO_PASSWORD="$LS_PASSWORD" \
    LABEL_STUDIO_USER_TOKEN="$LS_TOKEN" \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
    LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
    USE_DEFAULT_BANNED_SUBNETS=false \
    ML_BLOCK_LOCAL_IP=false \
    SSRF_PROTECTION_ENABLED=false \
    SENTRY_DSN= \
    FRONTEND_SENTRY_DSN= \
    COLLECT_ANALYTICS=false \
    LATEST_VERSION_CHECK=false \
    setsid "$LS_VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 \
      --port "$LS_PORT" --data-dir "$LS_DATA" >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  until curl -fsS -o /dev/null -H "Authorization: Token $LS_TOKEN" \
      "http://127.0.0.1:$LS_PORT/api/projects/" 2>/dev/null; do
    if ! is_running; then
      echo "label-studio exited; last log lines:" >&2; tail -n 40 "$LOGFILE" >&2; exit 1
    fi
    if (( SECONDS - start > LS_START_TIMEOUT )); then
      echo "label-studio did not answer within $LS_START_TIMEOUT s; see $LOGFILE" >&2; exit 1
    fi
    sleep 1
  done
  echo "label-studio up on http://127.0.0.1:$LS_PORT in $((SECONDS - start)) s (log: $LOGFILE)"
}

cmd_stop() {
  if is_running; then
    local pid
    pid="$(cat "$PIDFILE")"
    # setsid made it a process-group leader: stop the server and its workers together.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 30); do is_running || break; sleep 1; done
    is_running && kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped"
  else
    echo "not running"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  if is_running; then echo "running (pid $(cat "$PIDFILE")) on http://127.0.0.1:$LS_PORT"
  else echo "not running"; return 1; fi
}

cmd_env() {
  echo "export LABEL_STUDIO_URL=http://127.0.0.1:$LS_PORT"
  echo "export LABEL_STUDIO_TOKEN=$LS_TOKEN"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac
