"""``manage.py extract_features --project SLUG [--backend NAME] [--sync]``."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from active_learning.models import FeatureSet, JobStatus
from active_learning.services.features import (
    FeatureBackendError,
    feature_set_extract_sync,
    feature_set_start,
    feature_set_summary,
)
from annotation.models import Project


class Command(BaseCommand):
    help = (
        "Embed a project's ready clips (resumable). Default: enqueue on the cpu queue and wait, "
        "printing progress; --sync runs in this process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument(
            "--backend",
            default=None,
            help="logmel-stats, musicnn-msd, musicnn-mtt, structure-stats, names joined by +, or "
            "a model file: torch.export archive (.pt2) or TorchScript "
            "(default: the project's embedding backend)",
        )
        parser.add_argument("--sync", action="store_true", help="Run in this process")
        parser.add_argument("--timeout", type=int, default=3600, help="Seconds to wait (async)")

    def handle(self, *args: object, **opts: Any) -> None:
        try:
            project = Project.objects.get(slug=opts["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project with slug {opts['project']!r}") from None
        t0 = time.perf_counter()
        try:
            if opts["sync"]:
                fs = feature_set_extract_sync(project=project, backend=opts["backend"])
            else:
                fs = self._wait(
                    feature_set_start(project=project, backend=opts["backend"]), opts["timeout"]
                )
        except FeatureBackendError as exc:
            raise CommandError(str(exc)) from exc
        summary = feature_set_summary(feature_set=fs)
        self.stdout.write(f"{summary} in {time.perf_counter() - t0:.1f} s")
        for failure in fs.failures[:20]:
            self.stdout.write(f"  failed clip {failure['clip']}: {failure['reason']}")
        if fs.status != JobStatus.DONE:
            raise CommandError(f"feature set {fs.id} {fs.status}: {fs.error}")

    def _wait(self, fs: FeatureSet, timeout: int) -> FeatureSet:
        deadline = time.monotonic() + timeout
        last = None
        while fs.status not in (JobStatus.DONE, JobStatus.FAILED):
            if time.monotonic() > deadline:
                raise CommandError(f"feature set {fs.id} still {fs.status} after {timeout} s")
            now = (fs.n_done, fs.n_failed, fs.n_left)
            if now != last:
                self.stdout.write(f"  {fs.status}: {now[0]} done, {now[1]} failed, {now[2]} left")
                last = now
            time.sleep(1.0)
            fs.refresh_from_db()
        return fs
