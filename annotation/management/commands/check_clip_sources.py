"""Report clips whose source lies outside the import roots; optionally fail them (``--fix``) or make
the tag-free served copies that clips imported before blind copies existed lack (``--strip``).

Exit status 1 when clips outside the roots are found and ``--fix`` was not given, so a deployment
check (or CI) notices rows imported before the roots existed.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Q, QuerySet

from annotation.models import Clip
from annotation.services.audio_source import clip_served_copy
from annotation.services.clip_files import ClipFileUnavailable, path_resolve_in_roots
from annotation.services.media import media_exists

OUTSIDE_REASON = "source outside the import roots (REFRAIN_IMPORT_ROOTS and MEDIA_ROOT)"


class Command(BaseCommand):
    help = (
        "List clips whose source path resolves outside REFRAIN_IMPORT_ROOTS and MEDIA_ROOT "
        "(exit 1 if any). --fix marks them failed (they then serve nothing)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="Only this project (slug)")
        parser.add_argument(
            "--fix", action="store_true", help="Mark clips outside the roots as failed"
        )
        parser.add_argument(
            "--strip",
            action="store_true",
            help="Make the missing tag-free served copies of ready clips inside the roots",
        )
        parser.add_argument("--show", type=int, default=50, help="List at most this many clips")

    def handle(self, *args: object, **opts: object) -> None:
        clips = Clip.objects.order_by("pk")
        if opts["project"]:
            clips = clips.filter(project__slug=opts["project"])
        outside: list[int] = []
        shown = 0
        fields = ("pk", "project_id", "storage", "storage_key", "status")
        # Keys in the media storage or a bucket are not paths: only local files can lie outside.
        for clip in clips.filter(storage=Clip.Storage.LOCAL).only(*fields).iterator(2000):
            if clip.storage_key and path_resolve_in_roots(clip.storage_key) is not None:
                continue
            outside.append(clip.pk)
            if shown < int(opts["show"]):  # type: ignore[call-overload]
                self.stdout.write(
                    f"clip {clip.pk} (project {clip.project_id}, {clip.status}): "
                    f"{clip.storage_key or '(no path)'}"
                )
                shown += 1
        if opts["strip"]:
            self._strip(clips.exclude(pk__in=outside))
        if not outside:
            self.stdout.write("all clip sources lie inside the import roots")
            return
        if shown < len(outside):
            self.stdout.write(f"… and {len(outside) - shown} more")
        if opts["fix"]:
            n = 0
            for start in range(0, len(outside), 5000):
                n += (
                    Clip.objects.filter(pk__in=outside[start : start + 5000])
                    .filter(~Q(status=Clip.Status.FAILED) | ~Q(error=OUTSIDE_REASON))
                    .update(status=Clip.Status.FAILED, error=OUTSIDE_REASON)
                )
            self.stdout.write(f"{len(outside)} clip(s) outside the import roots; {n} marked failed")
            return
        self.stderr.write(
            f"{len(outside)} clip(s) outside the import roots; run with --fix to mark them failed"
        )
        raise SystemExit(1)

    def _strip(self, clips: QuerySet[Clip]) -> None:
        made = failed = 0
        for clip in clips.filter(status=Clip.Status.READY).iterator(500):
            if clip.served_key and media_exists(clip.served_key):
                continue
            try:
                clip_served_copy(clip)
                made += 1
            except ClipFileUnavailable as exc:
                failed += 1
                self.stderr.write(f"clip {clip.pk}: no served copy: {exc}")
        self.stdout.write(f"{made} tag-free served copies made, {failed} could not be made")
