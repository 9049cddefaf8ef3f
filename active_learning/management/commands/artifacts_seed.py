"""``manage.py artifacts_seed [--source DIR]``: put the musicnn weights into the artifacts storage.

``make install`` fetches the checkpoints once (``active_learning.core.musicnn.fetch``, pinned
SHA-256) and runs this command, which copies them to ``models/musicnn/`` of ``STORAGES["artifacts"]``:
the local ``ARTIFACT_ROOT`` by default, the bucket when ``REFRAIN_ARTIFACT_STORAGE=s3://...``. Every
worker then reads them from there (cached locally); nothing is downloaded from the internet at run
time. Idempotent: files already there with the same size are not uploaded again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from active_learning.artifacts import ArtifactStorageError, musicnn_install_dir, musicnn_seed


class Command(BaseCommand):
    help = "Upload the installed musicnn checkpoints to the artifacts storage (models/musicnn/)."
    requires_system_checks: list[str] = []  # runs from `make install`, before any database exists

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source",
            default=None,
            help="Folder holding the fetched checkpoints (default: MUSICNN_WEIGHTS_DIR, else "
            "var/models/musicnn)",
        )

    def handle(self, *args: object, **opts: Any) -> None:
        source = Path(opts["source"]) if opts["source"] else musicnn_install_dir()
        try:
            keys = musicnn_seed(source=source)
        except (FileNotFoundError, ArtifactStorageError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"musicnn weights: {len(keys)} file(s) in the artifacts storage")
