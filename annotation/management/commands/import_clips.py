from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import ImportJob, Project
from annotation.services.clips import (
    ImportSourceError,
    clips_import_bucket,
    clips_import_folder,
    clips_import_manifest,
)


def format_summary(job: ImportJob, *, show_problems: int = 20) -> str:
    lines = [
        f"{job.source}: {job.n_imported} imported, {job.n_duplicate} duplicate, "
        f"{job.n_failed} failed; {job.n_labels} labelled"
    ]
    for p in job.problems[:show_problems]:
        lines.append(f"  ! {p['item']}: {p['reason']}")
    if len(job.problems) > show_problems:
        lines.append(
            f"  … and {len(job.problems) - show_problems} more problems (see the import job)"
        )
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Import audio clips into a project from a folder (optionally one folder per label) or a "
        "CSV manifest (path,labels with |-separated taxonomy paths; other columns kept as metadata), "
        "or an S3-compatible bucket (--storage s3://bucket/prefix; a re-run adds only new objects)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug")
        src = parser.add_mutually_exclusive_group(required=True)
        src.add_argument("--folder", type=Path)
        src.add_argument("--manifest", type=Path)
        src.add_argument(
            "--storage",
            metavar="s3://BUCKET/PREFIX",
            help="Every audio object under the prefix of a bucket (AWS_* settings: endpoint, keys)",
        )
        parser.add_argument(
            "--labels-from-folders",
            action="store_true",
            help="Use each file's folder path (e.g. Rock/Punk) as its label",
        )

    def handle(self, *args: object, **opts: object) -> None:
        try:
            project = Project.objects.select_related("taxonomy_version").get(slug=opts["project"])
        except Project.DoesNotExist as exc:
            raise CommandError(f"no project with slug {opts['project']!r}") from exc
        try:
            if opts["storage"]:
                job = clips_import_bucket(
                    project=project,
                    uri=str(opts["storage"]),
                    labels_from_folders=bool(opts["labels_from_folders"]),
                )
            elif opts["folder"]:
                job = clips_import_folder(
                    project=project,
                    folder=opts["folder"],  # type: ignore[arg-type]
                    labels_from_folders=bool(opts["labels_from_folders"]),
                )
            else:
                job = clips_import_manifest(project=project, manifest=opts["manifest"])  # type: ignore[arg-type]
        except ImportSourceError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(format_summary(job))
