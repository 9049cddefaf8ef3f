"""The one Celery app: queues ``default``, ``cpu`` and ``gpu``; configuration from Django settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")

app = Celery("refrain")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task modules outside an app's top-level ``tasks.py``.
app.autodiscover_tasks(
    ["annotation.integrations.labelstudio", "active_learning.integrations.labelstudio_ml"]
)


@app.task(name="refrain.ping")
def ping(value: str = "pong") -> str:
    """Round-trip check used by health checks and the worker test."""
    return value
