"""Recompute the clip explorer's summary rows of a project (or of every project).

    python manage.py refresh_clip_summaries [--project SLUG]

The rows are kept in step by the services that change what they show; this rebuilds them all, e.g.
after a restore or a bulk change made outside Refrain.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from quality.services.summary import clip_summaries_refresh


class Command(BaseCommand):
    help = "Recompute the clip explorer's per-clip summary rows."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--project", help="slug of one project (default: every project)")

    def handle(self, *args: Any, **options: Any) -> None:
        projects = Project.objects.select_related("taxonomy_version").order_by("pk")
        if options["project"]:
            projects = projects.filter(slug=options["project"])
            if not projects.exists():
                raise CommandError(f"no project {options['project']!r}")
        for project in projects:
            t0 = time.perf_counter()
            n = clip_summaries_refresh(project=project)
            self.stdout.write(f"{project.slug}: {n} rows in {time.perf_counter() - t0:.1f} s")
