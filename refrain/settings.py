"""Refrain settings, read from the environment (12-factor).

Two configurations share one code path:

* embedded (the default): SQLite under ``var/`` and Celery's filesystem transport, so a bare machine
  runs the whole loop with a local worker and no server;
* production: ``DATABASE_URL=postgres://...`` and ``CELERY_BROKER_URL=redis://...`` (or ``amqp://``),
  with workers on other machines consuming the ``default``, ``cpu`` and ``gpu`` queues.
"""

from __future__ import annotations

from pathlib import Path

import environ
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("REFRAIN_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost", "testserver"]),
)
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env("DEBUG")
# The embedded default is for a laptop; production must set its own key.
SECRET_KEY = env.str("SECRET_KEY", default="refrain-embedded-insecure-key-change-me")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "annotation",
    "quality",
    "active_learning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "refrain.urls"
WSGI_APPLICATION = "refrain.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'refrain.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and a local worker write the same file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
STATICFILES_DIRS = [p for p in [BASE_DIR / "static"] if p.is_dir()]
# Serve static files straight from the app folders, so the demo and a small install need no
# collectstatic step; a large deployment runs collectstatic and may turn this off.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Feature matrices and model artifacts live next to media, as .npy files loaded with mmap.
ARTIFACT_ROOT = Path(env.str("ARTIFACT_ROOT", default=str(VAR_DIR / "artifacts")))
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Celery ---------------------------------------------------------------------------------------
# Embedded default: the filesystem transport needs no server; a local worker and the web process
# exchange messages through var/broker. Production sets redis:// or amqp://.
CELERY_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        # kombu defaults this to ./control in the working directory.
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=55 * 60)
# --- Worker loss (issue 12) ---------------------------------------------------------------------
# Redis (and SQS) hand an unacknowledged message to another worker only after its visibility
# timeout. acks_late tasks stay unacknowledged while they run, so the timeout must exceed the
# longest task (the hard time limit) or a long training would be delivered twice while it still
# runs. A worker that dies is noticed sooner by the orphan sweep below, not by this timeout.
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 30 * 60
)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sqs://", "redis+socket://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
# A running job row (cycle, detection run, feature set, training) records its worker and a
# heartbeat refreshed every REFRAIN_JOB_HEARTBEAT_SECONDS by a thread of the process doing the work.
# The sweep (quality.tasks.sweep_orphans, every minute on beat; `manage.py sweep_orphans` once)
# resumes a row whose heartbeat is older than REFRAIN_JOB_STALE_SECONDS and whose worker is gone
# (asked with Celery's remote control), or one left queued / between steps for
# REFRAIN_JOB_QUEUED_STALE_SECONDS with nobody taking it (its message was lost). A job lost
# REFRAIN_JOB_MAX_ATTEMPTS times is failed with the reason instead of being resumed again.
REFRAIN_JOB_HEARTBEAT_SECONDS = env.float("REFRAIN_JOB_HEARTBEAT_SECONDS", default=30.0)
REFRAIN_JOB_STALE_SECONDS = env.int("REFRAIN_JOB_STALE_SECONDS", default=120)
REFRAIN_JOB_QUEUED_STALE_SECONDS = env.int("REFRAIN_JOB_QUEUED_STALE_SECONDS", default=30 * 60)
REFRAIN_JOB_MAX_ATTEMPTS = env.int("REFRAIN_JOB_MAX_ATTEMPTS", default=3)
# Fault tests only: a worker started with REFRAIN_FAULT_PAUSE_AT="training.fit,..." stops at those
# points (refrain.jobs.fault_point), touching a file in REFRAIN_FAULT_DIR, so a test can SIGKILL it
# mid-step without guessing with sleeps. Empty (the default) makes every point a no-op.
REFRAIN_FAULT_PAUSE_AT = env.list("REFRAIN_FAULT_PAUSE_AT", default=[])
REFRAIN_FAULT_DIR = env.str("REFRAIN_FAULT_DIR", default="")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Static entries; django-celery-beat copies them into its tables, where admins can edit or add more.
CELERY_BEAT_SCHEDULE = {
    "expire-task-leases": {"task": "annotation.tasks.expire_leases", "schedule": 60.0},
    # Resume jobs whose worker died (see "Worker loss" above).
    "sweep-orphaned-jobs": {"task": "quality.tasks.sweep_orphans", "schedule": 60.0},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"), Queue("cpu"), Queue("gpu"))
CELERY_TASK_ROUTES = {
    # Feature extraction and detection are CPU-bound; training wants a GPU worker when one exists.
    "active_learning.tasks.extract_*": {"queue": "cpu"},
    "active_learning.tasks.train_*": {"queue": "gpu"},
    "quality.tasks.detect_*": {"queue": "cpu"},
}
# Training labels: "consensus" (a clip's consensus where several people labelled it, else its latest
# annotation) or "latest-annotation" (the newest annotation of every clip, consensus or not).
REFRAIN_LABELS_PROVIDER = env.str("REFRAIN_LABELS_PROVIDER", default="consensus")
# The relabel cycle runs as a chain of one task per step, each sent to its queue (others: default):
# the retrain (features if missing, K-fold training) to a GPU worker, detection to a CPU worker.
REFRAIN_CYCLE_STEP_QUEUES = {"retrain": "gpu", "detect": "cpu"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The filesystem transport has no host; kombu warns about it on every connection.
        "kombu.connection": {"level": "ERROR"},
    },
}
