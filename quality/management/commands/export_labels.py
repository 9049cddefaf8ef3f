"""``manage.py export_labels --project SLUG [--format csv|jsonl] [--out FILE] [--labelled-only]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from quality.export import FORMATS, export_chunks, label_export_rows


class Command(BaseCommand):
    help = (
        "Write a project's labels, one row per clip: the label that stands (consensus, review or "
        "newest annotation), its source, consensus quality and agreement, the newest label issue "
        "and the clip's status. The CSV is a manifest that import_clips --manifest reads."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--out", default="-", help="file to write ('-': standard output)")
        parser.add_argument(
            "--labelled-only", action="store_true", help="leave out clips nobody has labelled"
        )

    def handle(self, *args: object, **opts: object) -> None:
        project = Project.objects.filter(slug=str(opts["project"])).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['project']!r}")
        rows = label_export_rows(project=project, labelled_only=bool(opts["labelled_only"]))
        written = 0

        def counted() -> Iterator[dict[str, Any]]:
            nonlocal written
            for row in rows:
                written += 1
                yield row

        chunks = export_chunks(counted(), opts["format"])  # type: ignore[arg-type]
        out = str(opts["out"])
        if out == "-":
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        path = Path(out)
        if not path.parent.is_dir():
            raise CommandError(f"folder {path.parent} does not exist")
        with path.open("w", encoding="utf-8", newline="") as fh:
            for chunk in chunks:
                fh.write(chunk)
        self.stdout.write(f"wrote {written} clips of {project.slug} to {path}")
