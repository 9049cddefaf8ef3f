"""``manage.py labelstudio {link,push,pull,import-file,second-opinion,update-config,...}``: the
Label Studio sync from the command line.

Actions that need a layer above annotation (``push-predictions`` and ``ml-backend`` need the models
of ``active_learning``) are registered by that layer with :func:`command_action_register` from its
``AppConfig.ready()``, so this module never imports it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.integrations.labelstudio.export_files import FORMATS
from annotation.integrations.labelstudio.services import (
    ls_config_update,
    ls_import_export_file,
    ls_project_link,
    ls_pull_annotations,
    ls_push_tasks,
    ls_relabels_request,
    ls_request_second_opinion,
    ls_users_file_parse,
    routed_relabel_tasks,
)
from annotation.models import Clip, LabelStudioLink, Project, Task
from refrain.errors import ApplicationError


@dataclass(frozen=True)
class CommandAction:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[dict[str, Any]], dict[str, Any]]


#: Actions registered by the layers above annotation (see the module docstring).
EXTRA_ACTIONS: dict[str, CommandAction] = {}


def command_action_register(
    name: str,
    *,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Add ``manage.py labelstudio <name>``; ``handle`` gets the parsed options, returns JSON."""
    EXTRA_ACTIONS[name] = CommandAction(help=help, add_arguments=add_arguments, handle=handle)


def link_get(link_id: int) -> LabelStudioLink:
    """The link with this id, for command actions; CommandError when there is none."""
    found = (
        LabelStudioLink.objects.select_related("project__taxonomy_version", "taxonomy_version")
        .filter(id=link_id)
        .first()
    )
    if found is None:
        raise CommandError(f"no Label Studio link {link_id}")
    return found


class Command(BaseCommand):
    help = "Link a Refrain project to Label Studio, push its clips as tasks, pull annotations back."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        link = sub.add_parser("link", help="create (or adopt) a Label Studio project for a project")
        link.add_argument("project", help="Refrain project slug")
        link.add_argument("--url", required=True, help="Label Studio base URL")
        link.add_argument("--token", required=True, help="Label Studio API token")
        link.add_argument("--ls-project", type=int, help="adopt this existing LS project id")
        link.add_argument(
            "--refrain-url",
            default="",
            help="how LS reaches Refrain (audio URLs, webhook); default REFRAIN_PUBLIC_URL; "
            "no webhook without either",
        )
        push = sub.add_parser("push", help="import the project's ready clips as LS tasks")
        push.add_argument("link", type=int, help="link id (printed by 'link')")
        push.add_argument("--limit", type=int, help="at most this many clips")
        pull = sub.add_parser("pull", help="store LS annotations Refrain does not have yet")
        pull.add_argument("link", type=int, help="link id")
        read = sub.add_parser(
            "import-file", help="store the annotations of an LS export file (offline)"
        )
        read.add_argument("link", type=int, help="link id")
        read.add_argument("file", help="an export in JSON, JSON_MIN or CSV")
        read.add_argument("--format", choices=FORMATS, help="default: from the name and content")
        read.add_argument(
            "--users",
            help="who is who: LS's GET /api/users/ answer saved as JSON (exports name annotators "
            "by LS user id; ids a pull or webhook already saw need no file)",
        )
        again = sub.add_parser(
            "second-opinion",
            help="reopen clips' LS tasks for one more annotator (a routed issue's answer then "
            "closes it); without ids: every routed relabel task not asked in LS yet",
        )
        again.add_argument("link", type=int, help="link id")
        again.add_argument("--clip", type=int, nargs="*", default=[], help="clip ids")
        again.add_argument("--issue", type=int, nargs="*", default=[], help="label issue ids")
        config = sub.add_parser(
            "update-config",
            help="give LS the labelling config of the project's taxonomy version; prints the diff",
        )
        config.add_argument("link", type=int, help="link id")
        for name, action in EXTRA_ACTIONS.items():
            action.add_arguments(sub.add_parser(name, help=action.help))

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            extra = EXTRA_ACTIONS.get(options["action"])
            if extra is not None:
                out = extra.handle(options)
            else:
                out = getattr(self, f"_{options['action'].replace('-', '_')}")(options)
        except ApplicationError as exc:  # unreachable LS, a conflicting link, bad input
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(out, indent=2))

    def _link(self, options: dict[str, Any]) -> dict[str, Any]:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        link = ls_project_link(
            project=project,
            base_url=options["url"],
            api_key=options["token"],
            ls_project_id=options.get("ls_project"),
            refrain_url=options["refrain_url"],
        )
        return {
            "link": link.id,
            "ls_project": link.ls_project_id,
            "url": f"{link.base_url}/projects/{link.ls_project_id}",
            "webhook": link.ls_webhook_id,
        }

    def _get_link(self, link_id: int) -> LabelStudioLink:
        return link_get(link_id)

    def _update_config(self, options: dict[str, Any]) -> dict[str, Any]:
        update = ls_config_update(link=self._get_link(options["link"]))
        return {
            "changed": update.changed,
            "from_version": update.old_version,
            "to_version": update.new_version,
            "summary": update.summary(),
            "diff": update.diff,
        }

    def _push(self, options: dict[str, Any]) -> dict[str, Any]:
        link = self._get_link(options["link"])
        clips = Clip.objects.filter(project=link.project, status=Clip.Status.READY).order_by("id")
        if options.get("limit"):
            clips = clips[: options["limit"]]
        summary = ls_push_tasks(link=link, clips=list(clips))
        return {
            "created": summary.created,
            "already": summary.already,
            "reconciled": summary.reconciled,
            "skipped": summary.skipped,
        }

    def _import_file(self, options: dict[str, Any]) -> dict[str, Any]:
        link = self._get_link(options["link"])
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: {exc}") from exc
        users = None
        if options.get("users"):
            users_path = Path(options["users"])
            try:
                users = ls_users_file_parse(users_path.read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"{users_path}: {exc}") from exc
        summary = ls_import_export_file(
            link=link, text=text, fmt=options.get("format"), filename=path.name, users=users
        )
        return {
            "created": summary.created,
            "existing": summary.existing,
            "skipped": summary.skipped,
            "errors": summary.errors,
        }

    def _second_opinion(self, options: dict[str, Any]) -> dict[str, Any]:
        link = self._get_link(options["link"])
        project = link.project
        if not options["clip"] and not options["issue"]:
            return ls_relabels_request(
                task_ids=Task.objects.filter(project=project).values_list("pk", flat=True)
            )
        # A routed issue's relabel task is keyed by the issue (annotation.services.enqueue).
        relabels = {
            t.clip_id: t
            for t in routed_relabel_tasks().filter(
                project=project,
                status=Task.Status.OPEN,
                dedupe_key__in=[f"issue:{i}" for i in options["issue"]],
            )
        }
        found = {int(str(t.dedupe_key).removeprefix("issue:")) for t in relabels.values()}
        if missing := set(options["issue"]) - found:
            raise CommandError(
                f"issue(s) {sorted(missing)} of {project.slug}: not routed, or already answered"
            )
        clips = {c.id: c for c in Clip.objects.filter(project=project, id__in=options["clip"])}
        if set(options["clip"]) - set(clips):
            raise CommandError(
                f"clip(s) {sorted(set(options['clip']) - set(clips))} not in {project}"
            )
        for clip in Clip.objects.filter(id__in=list(relabels)):
            clips[clip.id] = clip
        open_relabel = {
            t.clip_id: t
            for t in routed_relabel_tasks().filter(clip_id__in=list(clips), status=Task.Status.OPEN)
        }
        asked = []
        for clip_id, clip in sorted(clips.items()):
            relabel = relabels.get(clip_id) or open_relabel.get(clip_id)
            got = ls_request_second_opinion(link=link, clip=clip, relabel_task=relabel)
            asked.append(
                {
                    "clip": clip_id,
                    "ls_task": got.ls_task_id,
                    "overlap": got.overlap,
                    "relabel_task": relabel.pk if relabel else None,
                    "already": got.already,
                }
            )
        return {"asked": asked}

    def _pull(self, options: dict[str, Any]) -> dict[str, Any]:
        summary = ls_pull_annotations(link=self._get_link(options["link"]))
        return {
            "created": summary.created,
            "existing": summary.existing,
            "skipped": summary.skipped,
            "errors": summary.errors,
        }
