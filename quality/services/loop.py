"""The project's loop settings, as its admins edit them: what the cycle trains on and how, how many
suspects it routes, how it acquires, and when it runs (``django-celery-beat``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from active_learning.core.features import CHECKPOINT_BACKENDS, available_backends, is_model_file
from active_learning.models import LoopPolicy
from annotation.models import Project
from quality.services.schedule import cycle_schedule_name, cycle_schedule_set
from refrain.errors import Invalid


class LoopSettingsError(Invalid, ValueError):
    """A setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class LoopSettings:
    embedding_backend: str
    model_kind: str
    retrain_every: int
    relabel_budget: int
    acquisition_strategy: str
    acquisition_batch_size: int
    acquisition_relabel_share: float
    schedule: str  # five crontab fields, a number of seconds, or "" (no schedule)


def embedding_backend_check(name: str) -> str:
    """The name, stripped, if it names registered backends (joined by ``+``) or a model file."""
    name = name.strip()
    if not name:
        raise LoopSettingsError("name an embedding backend")
    if "+" not in name and (name in CHECKPOINT_BACKENDS or is_model_file(name)):
        if name in CHECKPOINT_BACKENDS or not Path(name).is_file():
            raise LoopSettingsError(f"{name}: give the path of a model file that exists")
        return name
    known = set(available_backends()) - set(CHECKPOINT_BACKENDS)
    unknown = [part for part in name.split("+") if part not in known]
    if unknown:
        raise LoopSettingsError(
            f"unknown embedding backend {', '.join(map(repr, unknown))}; "
            f"use {', '.join(sorted(known))}, several joined by +, or a model file path"
        )
    return name


def loop_schedule(project: Project) -> str:
    """The project's cycle schedule as the settings form shows it ("" when none)."""
    task = (
        PeriodicTask.objects.filter(name=cycle_schedule_name(project), enabled=True)
        .select_related("crontab", "interval")
        .first()
    )
    if task is None:
        return ""
    if task.crontab is not None:
        c = task.crontab
        return f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"
    if task.interval is not None:
        return str(
            task.interval.every
            * {"days": 86400, "hours": 3600, "minutes": 60}.get(task.interval.period, 1)
        )
    return ""


def loop_settings(project: Project) -> LoopSettings:
    policy = project.loop_policy
    return LoopSettings(
        embedding_backend=policy.embedding_backend,
        model_kind=policy.model_kind,
        retrain_every=policy.retrain_every,
        relabel_budget=policy.relabel_budget,
        acquisition_strategy=policy.acquisition_strategy,
        acquisition_batch_size=policy.acquisition_batch_size,
        acquisition_relabel_share=policy.acquisition_relabel_share,
        schedule=loop_schedule(project),
    )


def project_loop_update(*, project: Project, settings: LoopSettings) -> Project:
    """Validate and save every loop setting together, schedule included, or nothing.

    Raises
    ------
    LoopSettingsError
        For an unknown backend, kind or strategy, a share outside [0, 1], a batch below 1, or a
        malformed schedule.
    """
    backend = embedding_backend_check(settings.embedding_backend)
    if settings.model_kind not in LoopPolicy.ModelKind.values:
        raise LoopSettingsError(f"unknown model kind {settings.model_kind!r}")
    if settings.acquisition_strategy not in LoopPolicy.AcquisitionStrategy.values:
        raise LoopSettingsError(f"unknown acquisition strategy {settings.acquisition_strategy!r}")
    if not 0.0 <= settings.acquisition_relabel_share <= 1.0:
        raise LoopSettingsError("the share of relabels is a fraction between 0 and 1")
    if settings.acquisition_batch_size < 1:
        raise LoopSettingsError("an acquisition batch holds at least one clip")
    if settings.retrain_every < 0 or settings.relabel_budget < 0:
        raise LoopSettingsError("counts cannot be negative")
    with transaction.atomic():
        try:
            cycle_schedule_set(
                project=project, crontab_or_interval=settings.schedule.strip() or None
            )
        except ValueError as exc:
            raise LoopSettingsError(f"schedule: {exc}") from exc
        policy = project.loop_policy
        policy.embedding_backend = backend
        policy.model_kind = settings.model_kind
        policy.retrain_every = settings.retrain_every
        policy.relabel_budget = settings.relabel_budget
        policy.acquisition_strategy = settings.acquisition_strategy
        policy.acquisition_batch_size = settings.acquisition_batch_size
        policy.acquisition_relabel_share = settings.acquisition_relabel_share
        policy.save(
            update_fields=[
                "embedding_backend",
                "model_kind",
                "retrain_every",
                "relabel_budget",
                "acquisition_strategy",
                "acquisition_batch_size",
                "acquisition_relabel_share",
            ]
        )
    return project
