"""``manage.py train --project SLUG [--sync]``."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from active_learning.models import JobStatus, ModelVersion
from active_learning.services.training import (
    model_train_for_project,
    model_train_start,
    model_version_summary,
)
from annotation.models import Project


class Command(BaseCommand):
    help = (
        "Train a model version with K-fold out-of-sample predictions. Default: enqueue on the "
        "gpu queue and wait; --sync runs in this process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--sync", action="store_true", help="Run in this process")
        parser.add_argument(
            "--kind",
            default=None,
            choices=["hierarchical", "flat", "cnn"],
            help="Model kind (default: the model_kind of the project's loop policy)",
        )
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--timeout", type=int, default=3600, help="Seconds to wait (async)")

    def handle(self, *args: object, **opts: Any) -> None:
        try:
            project = Project.objects.select_related("loop_policy").get(slug=opts["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project with slug {opts['project']!r}") from None
        t0 = time.perf_counter()
        common = {
            "kind": opts["kind"] or project.loop_policy.model_kind,
            "n_folds": opts["folds"],
            "seed": opts["seed"],
        }
        if opts["sync"]:
            mv = model_train_for_project(project=project, **common)
        else:
            mv = self._wait(model_train_start(project=project, **common), opts["timeout"])
        self.stdout.write(
            f"{model_version_summary(model_version=mv)} in {time.perf_counter() - t0:.1f} s"
        )
        if mv.status != JobStatus.DONE:
            raise CommandError(f"model v{mv.number} {mv.status}: {mv.error}")

    def _wait(self, mv: ModelVersion, timeout: int) -> ModelVersion:
        deadline = time.monotonic() + timeout
        shown = None
        while mv.status not in (JobStatus.DONE, JobStatus.FAILED):
            if time.monotonic() > deadline:
                raise CommandError(f"model v{mv.number} still {mv.status} after {timeout} s")
            if mv.status != shown:
                self.stdout.write(f"  model v{mv.number}: {mv.status}")
                shown = mv.status
            time.sleep(1.0)
            mv.refresh_from_db()
        return mv
