from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.services.taxonomies import taxonomy_import
from taxonomy.formats import TaxonomyFormatError


class Command(BaseCommand):
    help = (
        "Import a taxonomy file as a new version: FMA genres.csv, nested JSON, path lists, the "
        "AudioSet ontology (a DAG) or Discogs Genre---Style lists. Unchanged content adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", help="Taxonomy name (default: the file name without suffix)")
        parser.add_argument("--format", help="Force a format instead of detecting it")
        parser.add_argument("--root", help="Import only the subtree under this node key or name")

    def handle(self, *args: object, **opts: object) -> None:
        path: Path = opts["path"]  # type: ignore[assignment]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        name = str(opts["name"] or path.stem)
        try:
            result = taxonomy_import(
                name=name,
                data=path.read_bytes(),
                filename=path.name,
                format=opts["format"],  # type: ignore[arg-type]
                root=opts["root"],  # type: ignore[arg-type]
            )
        except TaxonomyFormatError as exc:
            raise CommandError(f"{path.name}: {exc}") from exc
        self.stdout.write(result.summary())
        changes = result.version.changes if result.created else {}
        for kind in ("added", "renamed", "moved", "parents_changed", "removed"):
            items = changes.get(kind) or []
            if items:
                shown = ", ".join(
                    " ".join(f"{v}" for v in i.values()) if isinstance(i, dict) else str(i)
                    for i in items[:10]
                )
                more = f" … (+{len(items) - 10})" if len(items) > 10 else ""
                self.stdout.write(f"  {kind}: {shown}{more}")
