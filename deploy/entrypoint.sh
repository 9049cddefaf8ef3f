#!/bin/sh
# The image's entrypoint: the first argument names the process (docs/deploy.md).
#   web       gunicorn with deploy/gunicorn.conf.py (GUNICORN_* variables)
#   worker    a Celery worker: CELERY_QUEUES (default "default,cpu,gpu"), CELERY_CONCURRENCY (2)
#   beat      Celery beat (the orphan sweep, lease expiry; one is enough, two are safe)
#   migrate   manage.py migrate, then exit (run once per upgrade, before the new web and workers)
#   anything else is run as given (e.g. "python manage.py createsuperuser")
set -eu
cmd="${1:-web}"
if [ "$#" -gt 0 ]; then shift; fi
case "$cmd" in
  web)
    exec gunicorn --config deploy/gunicorn.conf.py "$@" refrain.wsgi:application ;;
  worker)
    exec celery -A refrain worker \
      --queues "${CELERY_QUEUES:-default,cpu,gpu}" \
      --concurrency "${CELERY_CONCURRENCY:-2}" \
      --hostname "${CELERY_NODE_NAME:-worker}@%h" \
      --loglevel "${LOG_LEVEL:-INFO}" "$@" ;;
  beat)
    exec celery -A refrain beat --loglevel "${LOG_LEVEL:-INFO}" "$@" ;;
  migrate)
    exec python manage.py migrate --noinput "$@" ;;
  *)
    exec "$cmd" "$@" ;;
esac
