"""When to retrain: on demand, after ``loop_policy.retrain_every`` new annotations, and on a schedule."""

from __future__ import annotations

import json

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from active_learning.models import JobStatus, ModelVersion
from active_learning.selectors import annotations_since
from annotation.models import Project

RETRAIN_TASK = "active_learning.tasks.train_project_model"


def retrain_if_due(*, project: Project) -> ModelVersion | None:
    """Enqueue a retrain when ``retrain_every`` annotations arrived since the last version.

    Idempotent: while a version is queued or running nothing new is requested, and the check and
    the request happen under the project row lock, so two concurrent callers enqueue one model.
    """
    from active_learning.services.training import model_train_start

    every = project.loop_policy.retrain_every
    if every <= 0:
        return None
    with transaction.atomic():
        # Lock: the project row (model_version_request takes it again; same transaction, no wait).
        Project.objects.select_for_update().filter(id=project.id).first()
        versions = ModelVersion.objects.filter(project=project)
        if versions.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists():
            return None
        last = versions.exclude(status=JobStatus.FAILED).order_by("-number").first()
        if annotations_since(project=project, model_version=last) < every:
            return None
        return model_train_start(project=project, trigger=ModelVersion.Trigger.ANNOTATIONS)


def schedule_retraining(
    *, project: Project, crontab_or_interval: str | int | None, enabled: bool = True
) -> PeriodicTask | None:
    """Create or update the project's scheduled retrain (editable later in the admin).

    ``crontab_or_interval``: a five-field crontab (``"0 3 * * *"``), a number of seconds between
    runs, or None to remove the schedule.
    """
    name = f"retrain project {project.slug}"
    if crontab_or_interval is None:
        PeriodicTask.objects.filter(name=name).delete()
        return None
    fields: dict[str, object] = {"crontab": None, "interval": None}
    if isinstance(crontab_or_interval, int) or str(crontab_or_interval).strip().isdigit():
        seconds = int(crontab_or_interval)
        if seconds <= 0:
            raise ValueError("the interval must be a positive number of seconds")
        fields["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
    else:
        parts = str(crontab_or_interval).split()
        if len(parts) != 5:
            raise ValueError(
                f"crontab {crontab_or_interval!r} needs five fields: minute hour day month weekday"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    task, _ = PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            **fields,
            "task": RETRAIN_TASK,
            "args": json.dumps([project.id]),
            "kwargs": json.dumps({"trigger": ModelVersion.Trigger.SCHEDULE}),
            "queue": "gpu",
            "enabled": enabled,
            "description": f"Scheduled retrain of {project.name} (active_learning)",
        },
    )
    return task
