"""``manage.py sweep_orphans``: resume (or fail) the jobs whose worker is gone, once."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from quality.services.sweep import orphans_sweep, sweep_summary


class Command(BaseCommand):
    help = (
        "Find relabel cycles, detection runs, feature sets and trainings whose worker is gone and "
        "resume them (or fail them after REFRAIN_JOB_MAX_ATTEMPTS). Beat runs the same every minute."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-seconds",
            type=float,
            default=None,
            help="heartbeat age that makes a running job suspect (default REFRAIN_JOB_STALE_SECONDS)",
        )
        parser.add_argument(
            "--no-ask-workers",
            action="store_true",
            help="judge by heartbeat age alone, without asking the workers over the broker",
        )

    def handle(self, *args: Any, **opts: Any) -> None:

        actions = orphans_sweep(
            stale_seconds=opts["stale_seconds"], ask_workers=not opts["no_ask_workers"]
        )
        self.stdout.write(json.dumps(sweep_summary(actions), indent=2))
