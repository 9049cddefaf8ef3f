"""``manage.py run_cycle --project SLUG``: one relabel cycle, here or on a worker."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from quality.services.cycle import CycleBusy, cycle_run, cycle_summary
from quality.tasks import run_quality_cycle


class Command(BaseCommand):
    help = "Run the relabel cycle (retrain -> detect -> route -> acquire) for one project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="send it to a Celery worker and wait, instead of running in this process",
        )
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args: Any, **opts: Any) -> None:

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['project']!r}")
        if opts["enqueue"]:
            summary = run_quality_cycle.delay(project.pk).get(timeout=opts["timeout"])
        else:
            try:
                summary = cycle_summary(cycle_run(project=project))
            except CycleBusy as busy:
                raise CommandError(str(busy)) from busy
        self.stdout.write(json.dumps(summary, indent=2, default=str))
