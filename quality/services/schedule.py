"""The relabel cycle on a ``django-celery-beat`` schedule, one PeriodicTask per project.

The row is an ordinary PeriodicTask: admins edit its crontab or interval, or disable it, in the admin.
"""

from __future__ import annotations

import json

from celery.schedules import crontab
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from annotation.models import Project
from quality.models import QualityCycle

CYCLE_TASK = "quality.tasks.run_quality_cycle"


def cycle_schedule_name(project: Project) -> str:
    return f"relabel cycle {project.slug}"


def cycle_schedule_set(
    *, project: Project, crontab_or_interval: str | int | None, enabled: bool = True
) -> PeriodicTask | None:
    """Create or update the project's scheduled cycle; None removes it.

    ``crontab_or_interval``: five crontab fields (``"0 3 * * *"``) or a number of seconds.

    Raises
    ------
    ValueError
        For a malformed crontab or a non-positive interval.
    """
    name = cycle_schedule_name(project)
    if crontab_or_interval is None:
        PeriodicTask.objects.filter(name=name).delete()
        return None
    fields: dict[str, object] = {"crontab": None, "interval": None}
    spec = str(crontab_or_interval).strip()
    if spec.isdigit():
        seconds = int(spec)
        if seconds <= 0:
            raise ValueError("the interval must be a positive number of seconds")
        fields["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
    else:
        parts = spec.split()
        if len(parts) != 5:
            raise ValueError(
                f"crontab {spec!r} needs five fields: minute hour day-of-month month day-of-week"
            )
        minute, hour, dom, month, dow = parts
        try:  # what beat will parse, checked now rather than at the first tick
            crontab(
                minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
            )
        except ValueError as exc:
            raise ValueError(f"crontab {spec!r}: {exc}") from exc
        fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
        )
    task, _ = PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            **fields,
            "task": CYCLE_TASK,
            "args": json.dumps([project.pk]),
            "kwargs": json.dumps({"trigger": QualityCycle.Trigger.SCHEDULE}),
            "enabled": enabled,
            "description": f"Relabel cycle of {project.name}: retrain, detect, route, acquire.",
        },
    )
    return task
