"""Syncing a Refrain project with a Label Studio project through ``label_studio_sdk``.

Out: the labelling config, clips as tasks, model predictions, second-opinion requests.
In: Label Studio annotations (a pull, or one webhook payload at a time) become Refrain annotations
with source ``labelstudio:<email>``. The LS annotation id is the idempotency key, so a repeated pull
or a webhook that races a pull stores each LS annotation once; an annotation edited in LS becomes a
new Refrain annotation that supersedes the previous one (history is never overwritten).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from kombu.exceptions import OperationalError
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from annotation import events
from annotation.integrations.labelstudio.convert import (
    LabelStudioFormatError,
    label_config_from_taxonomy,
    labels_from_taxonomy_paths,
    prediction_from_probs,
    task_from_clip,
    taxonomy_paths_from_result,
)
from annotation.integrations.labelstudio.export_files import export_format_sniff, export_records
from annotation.models import (
    Annotation,
    Clip,
    LabelStudioLink,
    LabelStudioTask,
    LabelStudioUser,
    Membership,
    Project,
    Task,
)
from annotation.selectors import TaxonomyIndex, taxonomy_index_cached
from annotation.services.annotations import LabelError, annotation_create, labels_resolve
from refrain.errors import Conflict, Unavailable
from taxonomy.diff import diff_taxonomies

logger = logging.getLogger(__name__)

WEBHOOK_HEADER = "X-Refrain-Webhook-Secret"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
AUDIO_SIGNING_SALT = "refrain.labelstudio.audio"
PUSH_CHUNK = 500
LS_TITLE_MAX = 50  # Label Studio rejects longer project titles
LS_TIMEOUT_S = 30.0


class LabelStudioSyncError(Unavailable, RuntimeError):
    """Label Studio refused a request or could not be reached; the message says which and why."""


# --- client ---------------------------------------------------------------------------------------


def ls_client(*, base_url: str, api_key: str) -> LabelStudio:
    return LabelStudio(base_url=base_url.rstrip("/"), api_key=api_key, timeout=LS_TIMEOUT_S)


def _ls_call(what: str, fn: Callable[[], Any]) -> Any:
    """Run one SDK call; turn HTTP and transport errors into :class:`LabelStudioSyncError`."""
    try:
        return fn()
    except ApiError as exc:
        raise LabelStudioSyncError(
            f"Label Studio refused {what}: HTTP {exc.status_code} {exc.body}"
        ) from exc
    except httpx.HTTPError as exc:
        raise LabelStudioSyncError(f"Label Studio unreachable during {what}: {exc}") from exc


#: For the Label Studio integrations of the layers above (``active_learning``'s ML backend).
ls_call = _ls_call


def _client_for(link: LabelStudioLink) -> LabelStudio:
    return ls_client(base_url=link.base_url, api_key=link.api_key)


# --- URLs Label Studio uses to reach Refrain ------------------------------------------------------


def refrain_base_url(*, link: LabelStudioLink) -> str:
    """How Label Studio reaches Refrain: the link's ``refrain_url``, else ``REFRAIN_PUBLIC_URL``
    (empty when neither is set: links are then relative)."""
    return (link.refrain_url or settings.REFRAIN_PUBLIC_URL).rstrip("/")


def clip_audio_url(*, link: LabelStudioLink, clip: Clip) -> str:
    """A signed URL of the clip's audio: LS annotators hold no Refrain session, so the signature
    (bound to this link and clip) is the permission. Absolute from :func:`refrain_base_url`."""
    token = signing.TimestampSigner(salt=AUDIO_SIGNING_SALT).sign(f"{link.id}.{clip.id}")
    path = reverse("labelstudio-audio", kwargs={"token": token})
    return f"{refrain_base_url(link=link)}{path}"


def clip_audio_token_check(token: str) -> tuple[int, int] | None:
    """``(link_id, clip_id)`` for a valid, unexpired audio token, else None (forged, tampered or
    older than ``REFRAIN_SIGNED_LINK_MAX_AGE`` seconds)."""
    try:
        value = signing.TimestampSigner(salt=AUDIO_SIGNING_SALT).unsign(
            token, max_age=settings.REFRAIN_SIGNED_LINK_MAX_AGE
        )
        link_id, clip_id = value.split(".")
        return int(link_id), int(clip_id)
    except (signing.BadSignature, ValueError):
        return None


def webhook_url(*, link: LabelStudioLink) -> str:
    return f"{refrain_base_url(link=link)}{reverse('labelstudio-webhook', args=[link.id])}"


# --- link -----------------------------------------------------------------------------------------


class LabelStudioLinkConflict(Conflict):
    """The Label Studio project is linked to another Refrain project, or this project is linked to
    another Label Studio project on that server; nothing was changed on either side."""

    code = "labelstudio_link_conflict"


def ls_project_link(
    *,
    project: Project,
    base_url: str,
    api_key: str,
    ls_project_id: int | None = None,
    refrain_url: str = "",
) -> LabelStudioLink:
    """Link ``project`` to a Label Studio project, creating it there unless ``ls_project_id`` names
    an existing one (whose labelling config is then replaced by the taxonomy's).

    Idempotent: linking a project that is already linked to this server updates that link (its
    token, address, labelling config, overlap and webhook) and never creates a second Label Studio
    project. Naming a Label Studio project that another Refrain project is linked to, or another
    project than the one this project is linked to, is refused before anything changes remotely.

    With ``refrain_url`` (how Label Studio reaches Refrain; ``REFRAIN_PUBLIC_URL`` when not given), a
    webhook for created and updated annotations is registered, carrying a shared secret in
    :data:`WEBHOOK_HEADER`.
    """
    base_url = base_url.rstrip("/")
    existing = LabelStudioLink.objects.filter(project=project, base_url=base_url).first()
    if existing is not None and ls_project_id not in (None, existing.ls_project_id):
        raise LabelStudioLinkConflict(
            f"project {project.slug} is linked to Label Studio project {existing.ls_project_id} "
            f"on {base_url}, not {ls_project_id}; unlink it first"
        )
    if existing is not None:
        ls_project_id = existing.ls_project_id
    if ls_project_id is not None:
        taken = (
            LabelStudioLink.objects.filter(base_url=base_url, ls_project_id=ls_project_id)
            .exclude(project=project)
            .select_related("project")
            .first()
        )
        if taken is not None:
            raise LabelStudioLinkConflict(
                f"Label Studio project {ls_project_id} on {base_url} is linked to Refrain project "
                f"{taken.project.slug}"
            )
    index = taxonomy_index_cached(project.taxonomy_version)
    config = label_config_from_taxonomy(index.nodes)
    client = ls_client(base_url=base_url, api_key=api_key)
    if ls_project_id is not None and (
        existing is None or existing.taxonomy_version_id != project.taxonomy_version_id
    ):
        # The config is about to be replaced: refuse while Label Studio holds annotations that the
        # project's taxonomy version cannot read, before anything changes remotely.
        _config_check(client=client, ls_project_id=ls_project_id, index=index)
    settings_kw: dict[str, Any] = {
        "label_config": config,
        "maximum_annotations": project.overlap,
        # Blind: no pre-annotation and no history of the annotation shown to the annotator. The
        # labelling stream (``next``) shows each annotator only their own annotations anyway; what
        # Label Studio Community cannot hide is in docs/labelstudio.md ("Blind relabels").
        "show_collab_predictions": not project.blind,
        "show_annotation_history": not project.blind,
        # Label Studio then serves first the tasks whose prediction scores lowest: where the model
        # is least sure (ls_push_predictions scores a prediction by its deepest node's probability).
        "sampling": "Uncertainty sampling",
    }
    if existing is not None and existing.model_version:
        settings_kw["model_version"] = existing.model_version
    if ls_project_id is None:
        created = _ls_call(
            "project creation",
            lambda: client.projects.create(
                title=project.name[:LS_TITLE_MAX],
                description=f"Linked to Refrain project {project.slug}",
                overlap_cohort_percentage=100,
                **settings_kw,
            ),
        )
        ls_project_id = int(created.id)
    else:
        pid = ls_project_id
        _ls_call(f"project {pid} update", lambda: client.projects.update(id=pid, **settings_kw))
    if existing is None:
        link = LabelStudioLink.objects.create(
            project=project,
            base_url=base_url,
            ls_project_id=ls_project_id,
            api_key=api_key,
            webhook_secret=secrets.token_urlsafe(32),
            refrain_url=refrain_url.rstrip("/"),
            taxonomy_version=project.taxonomy_version,
        )
    else:
        link = existing
        link.api_key = api_key
        link.refrain_url = refrain_url.rstrip("/") or link.refrain_url
        link.taxonomy_version = project.taxonomy_version
        link.save(update_fields=["api_key", "refrain_url", "taxonomy_version"])
    if refrain_base_url(link=link):
        hook_kw: dict[str, Any] = {
            "url": webhook_url(link=link),
            "headers": {WEBHOOK_HEADER: link.webhook_secret},
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": list(WEBHOOK_ACTIONS),
        }
        if link.ls_webhook_id is not None:
            hook_id = link.ls_webhook_id
            _ls_call("webhook update", lambda: client.webhooks.update(id=hook_id, **hook_kw))
        else:
            hook = _ls_call(
                "webhook registration",
                lambda: client.webhooks.create(project=link.ls_project_id, **hook_kw),
            )
            link.ls_webhook_id = int(hook.id)
            link.save(update_fields=["ls_webhook_id"])
    return link


# --- labelling config after a taxonomy change ------------------------------------------------------


class LabelStudioConfigMismatch(Conflict):
    """Label Studio holds annotations naming genres the project's taxonomy version lacks; its
    labelling config was left as it was, so none of them is lost."""

    code = "labelstudio_config_mismatch"


#: How many unreadable annotations a mismatch error names (all are counted).
MISMATCH_SHOWN = 10


def _config_check(*, client: LabelStudio, ls_project_id: int, index: TaxonomyIndex) -> None:
    """Raise :class:`LabelStudioConfigMismatch` when an annotation in the Label Studio project
    names a genre that is not a node of ``index``'s version (by key, or by display path)."""
    tasks = _ls_call(
        "task listing",
        lambda: list(client.tasks.list(project=ls_project_id, fields="all", page_size=100)),
    )
    unreadable: list[str] = []
    for task in tasks:
        for raw in task.annotations or []:
            annotation = raw if isinstance(raw, dict) else raw.model_dump()
            if annotation.get("was_cancelled"):
                continue
            where = f"LS task {task.id} annotation {annotation.get('id')}"
            try:
                paths = taxonomy_paths_from_result(annotation.get("result") or [])
            except LabelStudioFormatError as exc:
                unreadable.append(f"{where}: {exc}")
                continue
            for path in paths:
                try:
                    labels = labels_from_taxonomy_paths([path], known_keys=index.by_key)
                    labels_resolve(index=index, labels=labels)
                except LabelError:
                    # As Label Studio shows it: the path's items (aliases or names), root first.
                    unreadable.append(f"{where}: {' > '.join(path)}")
    if unreadable:
        shown = "; ".join(unreadable[:MISMATCH_SHOWN])
        more = len(unreadable) - MISMATCH_SHOWN
        raise LabelStudioConfigMismatch(
            f"Label Studio project {ls_project_id} holds {len(unreadable)} annotation(s) that "
            f"taxonomy {index.version} cannot read, so its labelling config was not changed and "
            f"nothing was lost: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
            + ". Add these genres back in a new version, or move the project back to the version "
            "Label Studio holds and pull before moving on."
        )


@dataclass
class ConfigUpdate:
    """What :func:`ls_config_update` did: the versions and the diff between them (node keys)."""

    old_version: int | None
    new_version: int
    changed: bool
    diff: dict[str, list[Any]] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.changed:
            return f"Label Studio already holds taxonomy v{self.new_version}: nothing to update"
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.diff.items() if v)
        before = f"v{self.old_version}" if self.old_version is not None else "an unrecorded version"
        return f"labelling config updated from {before} to v{self.new_version}: {counts or 'no node changes'}"


def ls_config_update(*, link: LabelStudioLink) -> ConfigUpdate:
    """Give the linked Label Studio project the labelling config of the project's taxonomy
    version, when it holds another one, and report what changed (``taxonomy.diff``).

    Refused with :class:`LabelStudioConfigMismatch` (nothing changed on either side) while Label
    Studio holds annotations the new version cannot read: they would be unreadable on every pull.
    """
    from annotation.services.taxonomies import parsed_from_version  # the import path, not a cycle

    project = link.project
    new = project.taxonomy_version
    old = link.taxonomy_version
    if old is not None and old.pk == new.pk:
        return ConfigUpdate(old_version=old.number, new_version=new.number, changed=False)
    diff: dict[str, list[Any]] = {}
    if old is not None:
        d = diff_taxonomies(parsed_from_version(old), parsed_from_version(new))
        diff = {
            "added": list(d.added),
            "removed": list(d.removed),
            "renamed": [asdict(r) for r in d.renamed],
            "moved": [asdict(m) for m in d.moved],
        }
    index = taxonomy_index_cached(new)
    client = _client_for(link)
    pid = link.ls_project_id
    _config_check(client=client, ls_project_id=pid, index=index)
    config = label_config_from_taxonomy(index.nodes)
    _ls_call(
        f"project {pid} config update", lambda: client.projects.update(id=pid, label_config=config)
    )
    link.taxonomy_version = new
    link.save(update_fields=["taxonomy_version"])
    return ConfigUpdate(
        old_version=old.number if old is not None else None,
        new_version=new.number,
        changed=True,
        diff=diff,
    )


# --- push -----------------------------------------------------------------------------------------


@dataclass
class PushSummary:
    created: int = 0
    already: int = 0
    reconciled: int = 0  # tasks Label Studio held from an interrupted push, now mapped
    skipped: list[str] = field(default_factory=list)


def ls_clips_to_push(*, link: LabelStudioLink) -> QuerySet[Clip]:
    """The project's ready clips this link has not pushed yet, oldest first."""
    return (
        Clip.objects.filter(project=link.project, status=Clip.Status.READY)
        .exclude(Exists(LabelStudioTask.objects.filter(link=link, clip_id=OuterRef("pk"))))
        .order_by("pk")
    )


@dataclass(frozen=True)
class LinkOverview:
    """One link as the project's Label Studio settings page shows it (never its token)."""

    link: LabelStudioLink
    ls_url: str
    n_tasks: int
    n_to_push: int
    n_users: int
    n_relabels_waiting: int
    config_current: bool


def ls_links_overview(*, project: Project) -> list[LinkOverview]:
    """The project's links with their counts (a handful of queries per link: links are few)."""
    out = []
    for link in (
        LabelStudioLink.objects.filter(project=project)
        .select_related("project", "taxonomy_version")
        .order_by("pk")
    ):
        out.append(
            LinkOverview(
                link=link,
                ls_url=f"{link.base_url.rstrip('/')}/projects/{link.ls_project_id}",
                n_tasks=link.tasks.count(),
                n_to_push=ls_clips_to_push(link=link).count(),
                n_users=link.users.count(),
                n_relabels_waiting=link.tasks.filter(
                    relabel_task__isnull=False, relabel_task__status=Task.Status.OPEN
                ).count(),
                config_current=link.taxonomy_version_id == project.taxonomy_version_id,
            )
        )
    return out


def ls_push_tasks(*, link: LabelStudioLink, clips: Iterable[Clip]) -> PushSummary:
    """Import clips as Label Studio tasks; clips already pushed through this link are left alone.

    Idempotent under partial failure. Each chunk's mapping is recorded as soon as Label Studio
    answers, and a failed chunk ends the push with the earlier chunks' mappings committed. When
    Label Studio holds more tasks than the link has mapped (a lost response, a crash mid-push, tasks
    imported by hand), the push first maps the tasks it already holds for these clips (by the
    ``refrain_clip_id`` each task carries) and sends only the rest, so a retry creates nothing twice.
    """
    summary = PushSummary()
    wanted: list[Clip] = []
    for clip in clips:
        if clip.project_id != link.project_id:
            raise ValueError(f"clip {clip.id} is not in project {link.project}")
        if clip.status != Clip.Status.READY:
            summary.skipped.append(f"clip {clip.id}: status {clip.status}")
            continue
        wanted.append(clip)
    client = _client_for(link)
    failure: LabelStudioSyncError | None = None
    with transaction.atomic():
        # Lock: the link row, so two pushes never send one clip twice.
        LabelStudioLink.objects.select_for_update().filter(pk=link.pk).first()
        pid = link.ls_project_id
        done = set(
            LabelStudioTask.objects.filter(
                link=link, clip_id__in=[c.id for c in wanted]
            ).values_list("clip_id", flat=True)
        )
        held = _ls_call("project read", lambda: client.projects.get(id=pid)).task_number or 0
        if held > LabelStudioTask.objects.filter(link=link).count():
            unmapped = [c for c in wanted if c.id not in done]
            pairs = _match_tasks_by_clip(link=link, client=client, clips=unmapped)
            summary.reconciled = _record_mapping(link=link, pairs=pairs)
            done |= {c.id for c, _ in pairs}
        todo = [c for c in wanted if c.id not in done]
        summary.already = len(wanted) - len(todo) - summary.reconciled
        for start in range(0, len(todo), PUSH_CHUNK):
            chunk = todo[start : start + PUSH_CHUNK]
            payload = [
                task_from_clip(
                    c, audio_url=clip_audio_url(link=link, clip=c), blind=link.project.blind
                )
                for c in chunk
            ]
            try:
                response = _ls_call(
                    "task import",
                    lambda payload=payload: client.projects.import_tasks(
                        id=pid, request=payload, return_task_ids=True
                    ),
                )
            except LabelStudioSyncError as exc:
                failure = exc  # commit what landed before; Label Studio may hold this chunk too
                break
            task_ids = list(getattr(response, "task_ids", None) or [])
            if len(task_ids) == len(chunk):
                pairs = list(zip(chunk, task_ids, strict=True))
            else:
                # An LS that does not return ids in order: map by the clip id stored in the task.
                pairs = _match_tasks_by_clip(link=link, client=client, clips=chunk)
            summary.created += _record_mapping(link=link, pairs=pairs)
    if failure is not None:
        raise LabelStudioSyncError(
            f"{failure} (after {summary.created} task(s) created and recorded; push again to "
            "send the rest: nothing is sent twice)"
        ) from failure
    return summary


def _record_mapping(*, link: LabelStudioLink, pairs: Sequence[tuple[Clip, int]]) -> int:
    LabelStudioTask.objects.bulk_create(
        [LabelStudioTask(link=link, clip=c, ls_task_id=int(t)) for c, t in pairs],
        ignore_conflicts=True,
    )
    return len(pairs)


def _match_tasks_by_clip(
    *, link: LabelStudioLink, client: LabelStudio, clips: Sequence[Clip]
) -> list[tuple[Clip, int]]:
    """The Label Studio task of each of ``clips`` that the project holds (the oldest, should an
    earlier failure have left two), by the ``refrain_clip_id`` in its data."""
    by_id = {c.id: c for c in clips}
    found: dict[int, int] = {}
    tasks = _ls_call(
        "task listing",
        lambda: list(
            client.tasks.list(project=link.ls_project_id, fields="task_only", page_size=500)
        ),
    )
    for task in tasks:
        clip_id = _clip_id_of(task.data or {})
        if clip_id in by_id:
            found[clip_id] = min(found.get(clip_id, int(task.id)), int(task.id))
    return [(by_id[c], t) for c, t in found.items()]


def model_version_name(model_version_id: int | str) -> str:
    return f"refrain-{model_version_id}"


@dataclass
class PredictionSummary:
    model_version: str
    created: int = 0
    already: int = 0  # tasks that held a prediction of this model version already
    not_pushed: list[int] = field(default_factory=list)


def _tasks_with_prediction(
    *, link: LabelStudioLink, client: LabelStudio, model_version: str
) -> set[int]:
    """Label Studio task ids of the linked project that hold a prediction of ``model_version``."""
    listed = _ls_call(
        "prediction listing",
        lambda: client.predictions.list(project=link.ls_project_id),
    )
    return {
        int(p.task)
        for p in listed
        if getattr(p, "model_version", None) == model_version and p.task is not None
    }


def ls_push_predictions(
    *,
    link: LabelStudioLink,
    model_version_id: int | str,
    probs_by_clip: Mapping[int, npt.NDArray[np.floating[Any]]],
    stop_below: float | None = None,
    scores_by_clip: Mapping[int, float] | None = None,
) -> PredictionSummary:
    """Send each clip's argmax path (full, root first) as a prediction and make it the project's
    model version.

    ``probs_by_clip`` maps clip ids to (K,) hierarchy-consistent probabilities in node-index
    order. ``scores_by_clip`` gives the score Label Studio sorts by (lowest first; without it, the
    deepest node's probability). Label Studio orders by predictions only when their
    ``model_version`` equals the project's, so the project is switched to this one. Clips never
    pushed are reported, not sent.

    Idempotent: tasks that already hold a prediction of this model version in Label Studio (an
    earlier push, or one whose chunk failed half way) are left alone, so pushing one model version
    again creates nothing twice.
    """
    summary = PredictionSummary(model_version=model_version_name(model_version_id))
    nodes = taxonomy_index_cached(link.project.taxonomy_version).nodes
    task_of = dict(
        LabelStudioTask.objects.filter(link=link, clip_id__in=list(probs_by_clip)).values_list(
            "clip_id", "ls_task_id"
        )
    )
    client = _client_for(link)
    held = _tasks_with_prediction(link=link, client=client, model_version=summary.model_version)
    requests: list[dict[str, Any]] = []
    for clip_id, probs in probs_by_clip.items():
        if clip_id not in task_of:
            summary.not_pushed.append(clip_id)
            continue
        if task_of[clip_id] in held:
            summary.already += 1
            continue
        pred = prediction_from_probs(
            probs,
            nodes=nodes,
            model_version=summary.model_version,
            stop_below=stop_below,
            score=None if scores_by_clip is None else scores_by_clip.get(clip_id),
        )
        requests.append({"task": task_of[clip_id], **pred})
    for start in range(0, len(requests), PUSH_CHUNK):
        chunk = requests[start : start + PUSH_CHUNK]
        _ls_call(
            "prediction import",
            lambda chunk=chunk: client.projects.import_predictions(
                id=link.ls_project_id, request=chunk
            ),
        )
        summary.created += len(chunk)
    _ls_call(
        "model version update",
        lambda: client.projects.update(id=link.ls_project_id, model_version=summary.model_version),
    )
    link.model_version = summary.model_version
    link.save(update_fields=["model_version"])
    return summary


@dataclass
class SecondOpinion:
    clip_id: int
    ls_task_id: int
    overlap: int  # the Label Studio task's overlap now
    annotators: int  # distinct Label Studio annotators of the task before this request
    already: bool = False  # asked before for this relabel task: nothing changed


def ls_request_second_opinion(
    *, link: LabelStudioLink, clip: Clip, relabel_task: Task | None = None
) -> SecondOpinion:
    """Reopen ``clip``'s Label Studio task for exactly one more annotator.

    Label Studio 1.23 serves a task to a user who has not annotated it while the number of its
    distinct annotators (skips left out) is below the task's ``overlap`` (``is_labeled`` and the
    task lock both count that way), so the overlap becomes that number plus one: a clip labelled
    only in Refrain (no Label Studio annotation) gets overlap 1, one labelled by two people in
    Label Studio gets 3. Nobody who annotated it in Label Studio is served it again.

    With ``relabel_task`` (a routed issue's Refrain relabel task), the first Label Studio annotation
    made after the first request for it answers that task (see :func:`ls_annotation_ingest`).
    Idempotent per relabel task: while the Label Studio task still waits for the annotator asked
    for, asking again changes nothing; once that annotator answered without closing the relabel (an
    answer that was not blind), asking again asks one more.
    """
    mapped = LabelStudioTask.objects.filter(link=link, clip=clip).first()
    if mapped is None:
        raise LabelStudioSyncError(f"clip {clip.id} was never pushed to Label Studio")
    client = _client_for(link)
    tid = mapped.ls_task_id
    annotations = _ls_call(f"task {tid} annotations", lambda: list(client.annotations.list(id=tid)))
    annotators = {a.completed_by for a in annotations if not a.was_cancelled}
    asked_before = relabel_task is not None and mapped.relabel_task_id == relabel_task.pk
    if asked_before:
        task = _ls_call(f"task {tid} lookup", lambda: client.tasks.get(str(tid)))
        # An answer Refrain has not ingested yet may still close the relabel: wait for it too.
        unread = {
            f"ls:{link.id}:{a.id}"
            for a in annotations
            if not a.was_cancelled and int(a.id) > (mapped.relabel_after or 0)
        } - set(
            Annotation.objects.filter(
                clip=clip, idempotency_key__startswith=f"ls:{link.id}:"
            ).values_list("idempotency_key", flat=True)
        )
        if len(annotators) < int(task.overlap or 1) or unread:
            return SecondOpinion(clip.id, tid, int(task.overlap or 1), len(annotators), True)
    overlap = len(annotators) + 1
    _ls_call(
        f"task {tid} update",
        lambda: client.tasks.update(id=str(tid), overlap=overlap, is_labeled=False),
    )
    if relabel_task is not None and not asked_before:
        mapped.relabel_task = relabel_task
        mapped.relabel_after = max((int(a.id) for a in annotations), default=0)
        mapped.relabel_requested_at = timezone.now()
        mapped.save(update_fields=["relabel_task", "relabel_after", "relabel_requested_at"])
    return SecondOpinion(clip.id, tid, overlap, len(annotators))


def routed_relabel_tasks() -> QuerySet[Task]:
    """Relabel tasks of routed label issues (keyed ``issue:<id>`` by the ``LabelIssueFound``
    source); second opinions the acquisition picked and reviewers' send-backs are not among them."""
    return Task.objects.filter(kind=Task.Kind.RELABEL, dedupe_key__startswith="issue:")


def _open_relabels(task_ids: Iterable[int] | None = None) -> list[tuple[LabelStudioLink, Task]]:
    """Open relabel tasks of routed label issues whose clip is in a linked Label Studio project,
    with the link (of ``task_ids``, or all)."""
    tasks = routed_relabel_tasks().filter(
        Exists(LabelStudioTask.objects.filter(clip_id=OuterRef("clip_id"))),
        status=Task.Status.OPEN,
    )
    if task_ids is not None:
        tasks = tasks.filter(pk__in=list(task_ids))
    out = []
    for task in tasks.select_related("clip").order_by("pk"):
        for mapped in LabelStudioTask.objects.filter(clip_id=task.clip_id).select_related("link"):
            out.append((mapped.link, task))
    return out


def ls_relabels_request(*, task_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """Make Label Studio wait for one more annotator on each open routed relabel task (of
    ``task_ids``, or all): those not asked yet, and those whose asked annotator answered without
    closing the relabel (not blind). A task Label Studio still holds open for its annotator is
    counted as ``waiting`` and left alone. A Label Studio that cannot be reached is reported per
    task; the reconciliation (``ls_reconcile_links``) runs this again."""
    asked: list[dict[str, Any]] = []
    waiting = 0
    errors: list[str] = []
    for link, task in _open_relabels(task_ids):
        try:
            got = ls_request_second_opinion(link=link, clip=task.clip, relabel_task=task)
        except LabelStudioSyncError as exc:
            errors.append(f"relabel task {task.pk} (clip {task.clip_id}): {exc}")
            continue
        if got.already:
            waiting += 1
            continue
        asked.append(
            {
                "task": task.pk,
                "clip": task.clip_id,
                "ls_task": got.ls_task_id,
                "overlap": got.overlap,
            }
        )
    return {"asked": asked, "waiting": waiting, "errors": errors}


def ls_relabels_request_on_commit(*, task_ids: Sequence[int]) -> bool:
    """After the caller's transaction commits, have a worker ask Label Studio for these relabel
    tasks' second opinions, if any of their clips is in a linked project. Returns whether one was
    queued. A broker that is down is logged, not raised: the reconciliation asks later."""
    # tasks.py imports this module (its tasks call these services).
    from annotation.integrations.labelstudio.tasks import ls_request_relabels

    ids = list(
        routed_relabel_tasks()
        .filter(pk__in=list(task_ids))
        .filter(Exists(LabelStudioTask.objects.filter(clip_id=OuterRef("clip_id"))))
        .values_list("pk", flat=True)
    )
    if not ids:
        return False

    def send() -> None:
        try:
            ls_request_relabels.delay(ids)
        except (OSError, OperationalError) as exc:  # the broker; the reconciliation asks later
            logger.warning("Label Studio second opinions for tasks %s not queued: %s", ids, exc)

    transaction.on_commit(send)
    return True


# --- pull and webhook ingest ----------------------------------------------------------------------


@dataclass
class IngestResult:
    status: str  # "created", "superseded", "existing", "skipped", "error"
    annotation_id: int | None = None
    reason: str = ""


@dataclass
class PullSummary:
    created: int = 0
    existing: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _clip_id_of(data: Mapping[str, Any]) -> int | None:
    value = data.get("refrain_clip_id")
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _email_from_created_username(value: Any) -> str:
    # LS sends "<first> <last> <email>, <id>"; the email is the last word before the comma.
    if not isinstance(value, str) or "," not in value:
        return ""
    words = value.rsplit(",", 1)[0].split()
    return words[-1] if words and "@" in words[-1] else ""


def _email_or_user_id(annotation: Mapping[str, Any]) -> tuple[str, int | None]:
    """The annotator's email as the annotation gives it (``created_username``, an expanded
    ``completed_by``), and the Label Studio user id ("" and None where absent)."""
    email = _email_from_created_username(annotation.get("created_username"))
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # some exports expand the user
        email = email or str(who.get("email") or "")
        who = who.get("id")
    return email, who if isinstance(who, int) and not isinstance(who, bool) else None


def ls_users_remember(*, link: LabelStudioLink, emails: Mapping[int, str]) -> int:
    """Record Label Studio user id → email for ``link`` (a new email replaces an old one); how
    many were new or changed. Export files name annotators by id only: these map them offline."""
    emails = {int(k): v for k, v in emails.items() if "@" in str(v)}
    if not emails:
        return 0
    known = dict(
        LabelStudioUser.objects.filter(link=link, ls_user_id__in=emails).values_list(
            "ls_user_id", "email"
        )
    )
    changed = {uid: email for uid, email in emails.items() if known.get(uid) != email}
    if changed:
        LabelStudioUser.objects.bulk_create(
            [LabelStudioUser(link=link, ls_user_id=u, email=e) for u, e in changed.items()],
            update_conflicts=True,
            unique_fields=["link", "ls_user_id"],
            update_fields=["email"],
        )
    return len(changed)


def _known_emails(link: LabelStudioLink) -> dict[int, str]:
    return dict(LabelStudioUser.objects.filter(link=link).values_list("ls_user_id", "email"))


class EmailLookup:
    """LS user id → email: from the annotation itself, what the link learnt before, or one
    ``users.get`` per user; what it learns is kept on the link (:meth:`remember`)."""

    def __init__(self, link: LabelStudioLink) -> None:
        self._link = link
        self._cache: dict[int, str] = _known_emails(link)
        self._learnt: dict[int, str] = {}
        self._client: LabelStudio | None = None

    def __call__(self, annotation: Mapping[str, Any]) -> str:
        email, user_id = _email_or_user_id(annotation)
        if user_id is None:
            return email or "unknown"
        if email:
            if self._cache.get(user_id) != email:
                self._cache[user_id] = self._learnt[user_id] = email
            return email
        if user_id not in self._cache:
            self._client = self._client or _client_for(self._link)
            client = self._client
            user = _ls_call(f"user {user_id} lookup", lambda: client.users.get(id=user_id))
            found = str(getattr(user, "email", "") or "")
            self._cache[user_id] = found or f"user-{user_id}"
            if found:
                self._learnt[user_id] = found
        return self._cache[user_id]

    def remember(self) -> None:
        """Keep the ids and emails learnt in this pull or webhook on the link."""
        if self._learnt:
            ls_users_remember(link=self._link, emails=self._learnt)
            self._learnt = {}


def _refrain_user(*, project: Project, email: str) -> AbstractBaseUser | None:
    """The project member with this email, so the annotation counts as theirs; else None."""
    if "@" not in email:
        return None
    member = (
        Membership.objects.filter(project=project, user__email__iexact=email)
        .select_related("user")
        .first()
    )
    return member.user if member is not None else None


def ls_annotation_ingest(
    *,
    link: LabelStudioLink,
    annotation: Mapping[str, Any],
    task: Mapping[str, Any],
    index: TaxonomyIndex,
    email_for: Callable[[Mapping[str, Any]], str],
) -> IngestResult:
    """Store one Label Studio annotation as a Refrain annotation (once).

    Raises :class:`LabelStudioFormatError` for payloads without the ids Refrain needs and
    :class:`LabelError` for genres that are not nodes of the project's taxonomy version.
    """
    ls_ann_id = annotation.get("id")
    if not isinstance(ls_ann_id, int):
        raise LabelStudioFormatError("annotation has no integer 'id'")
    if annotation.get("was_cancelled"):
        return IngestResult("skipped", reason="skipped in Label Studio")
    data = task.get("data")
    clip_id = _clip_id_of(data) if isinstance(data, dict) else None
    if clip_id is None:
        raise LabelStudioFormatError("task.data.refrain_clip_id is missing: not a Refrain task")
    clip = Clip.objects.filter(id=clip_id, project_id=link.project_id).first()
    if clip is None:
        raise LabelStudioFormatError(f"clip {clip_id} is not in project {link.project}")
    paths = taxonomy_paths_from_result(annotation.get("result"))
    if not paths:
        return IngestResult("skipped", reason="no genre selected")
    labels = labels_from_taxonomy_paths(paths, known_keys=index.by_key)
    node_ids = labels_resolve(index=index, labels=labels)
    email = email_for(annotation)
    user = _refrain_user(project=link.project, email=email)
    lead_time = annotation.get("lead_time")
    time_spent_ms = (
        int(lead_time * 1000) if isinstance(lead_time, int | float) and lead_time >= 0 else None
    )
    key = f"ls:{link.id}:{ls_ann_id}"
    # The link row lock serialises ingests of one link: a webhook racing a pull cannot store one
    # LS annotation twice (the unique idempotency constraint only covers rows with a user).
    with transaction.atomic():
        LabelStudioLink.objects.select_for_update().filter(pk=link.pk).first()
        stored = (
            Annotation.objects.filter(clip=clip)
            .filter(Q(idempotency_key=key) | Q(idempotency_key__startswith=f"{key}:"))
            .order_by("-created_at", "-id")
        )
        previous = stored.first()
        if previous is not None:
            explicit = set(previous.labels.filter(explicit=True).values_list("node_id", flat=True))
            if explicit == set(node_ids):
                return IngestResult("existing", previous.id)
            key = f"{key}:{stored.count()}"
        relabel = (
            None
            if previous is not None
            else _relabel_answered(
                link=link, clip=clip, ls_annotation_id=ls_ann_id, user=user, email=email
            )
        )
        ann, _ = annotation_create(
            clip=clip,
            index=index,
            explicit_node_ids=node_ids,
            source=f"labelstudio:{email}",
            kind=Annotation.Kind.RELABEL if relabel is not None else Annotation.Kind.LABEL,
            user=user,
            task=relabel,
            time_spent_ms=time_spent_ms,
            idempotency_key=key,
            supersedes=previous,
        )
        if relabel is not None:
            _relabel_task_count(relabel)
        # Like any other new opinion: consensus, issue closing and the cycle trigger, after commit.
        events.publish(
            events.annotation_committed,
            annotation_id=ann.pk,
            clip_id=clip.pk,
            project_id=clip.project_id,
            origin="labelstudio",
        )
    return IngestResult("superseded" if previous is not None else "created", ann.id)


def _relabel_answered(
    *,
    link: LabelStudioLink,
    clip: Clip,
    ls_annotation_id: int,
    user: AbstractBaseUser | None,
    email: str,
) -> Task | None:
    """The open Refrain relabel task that a new Label Studio annotation answers: one asked in Label
    Studio (:func:`ls_request_second_opinion`) before this annotation was made, whose clip this
    annotator has not labelled before (in Refrain, or in Label Studio under this email). The
    caller holds the link's row lock. Locks the task row."""
    mapped = (
        LabelStudioTask.objects.filter(
            link=link,
            clip=clip,
            relabel_task__status=Task.Status.OPEN,
            relabel_after__lt=ls_annotation_id,
        )
        .select_related("relabel_task")
        .first()
    )
    if mapped is None or mapped.relabel_task is None:
        return None
    earlier = Annotation.objects.filter(clip=clip, source=f"labelstudio:{email}")
    if user is not None:
        earlier = earlier | Annotation.objects.filter(clip=clip, user=user)
    if earlier.exists():
        logger.info(
            "Label Studio annotation %s by %s does not answer relabel task %s: not blind "
            "(they labelled clip %s before)",
            ls_annotation_id,
            email,
            mapped.relabel_task_id,
            clip.pk,
        )
        return None
    task = Task.objects.select_for_update().get(pk=mapped.relabel_task_id)
    return task if task.status == Task.Status.OPEN else None


def _relabel_task_count(task: Task) -> None:
    """Count one answer towards ``task`` (locked by the caller), as a Refrain submit does."""
    task.n_submitted += 1
    if task.n_submitted >= task.overlap:
        task.status = Task.Status.DONE
        task.completed_at = timezone.now()
    task.save(update_fields=["n_submitted", "status", "completed_at"])


def ls_webhook_ingest(*, link: LabelStudioLink, payload: Mapping[str, Any]) -> IngestResult:
    """One webhook payload (already shape-checked by the view), from a Celery worker."""
    index = taxonomy_index_cached(link.project.taxonomy_version)
    email_for = EmailLookup(link)
    try:
        return ls_annotation_ingest(
            link=link,
            annotation=payload["annotation"],
            task=payload["task"],
            index=index,
            email_for=email_for,
        )
    except (LabelStudioFormatError, LabelError) as exc:
        logger.warning("Label Studio link %s: annotation not stored: %s", link.id, exc)
        return IngestResult("error", reason=str(exc))
    finally:
        email_for.remember()


def _known_annotation_ids(link: LabelStudioLink) -> set[int]:
    """Label Studio annotation ids this link has stored (from their idempotency keys)."""
    prefix = f"ls:{link.id}:"
    known: set[int] = set()
    for key in Annotation.objects.filter(
        clip__project_id=link.project_id, idempotency_key__startswith=prefix
    ).values_list("idempotency_key", flat=True):
        head = key[len(prefix) :].split(":", 1)[0]
        if head.isdigit():
            known.add(int(head))
    return known


def _changed_since(annotation: Mapping[str, Any], since: datetime | None) -> bool:
    """Whether Label Studio changed the annotation after ``since`` (True when it cannot tell)."""
    if since is None:
        return True
    stamp = annotation.get("updated_at")
    if isinstance(stamp, str):
        stamp = parse_datetime(stamp)
    if not isinstance(stamp, datetime):
        return True
    if timezone.is_naive(stamp):
        stamp = timezone.make_aware(stamp, UTC)
    return stamp > since


def _ingest_counted(summary: PullSummary, where: str, **ingest: Any) -> None:
    """One :func:`ls_annotation_ingest`, counted into ``summary``; a record Refrain cannot store
    is listed in ``summary.errors`` under ``where`` and the caller goes on."""
    try:
        result = ls_annotation_ingest(**ingest)
    except (LabelStudioFormatError, LabelError) as exc:
        summary.errors.append(f"{where}: {exc}")
        return
    if result.status in ("created", "superseded"):
        summary.created += 1
    elif result.status == "existing":
        summary.existing += 1
    else:
        summary.skipped += 1


#: How far before the previous pull's start an incremental pull asks Label Studio for changed
#: tasks: Label Studio stamps ``updated_at`` with its own clock.
PULL_CLOCK_MARGIN = timedelta(minutes=2)


def _changed_tasks_query(since: datetime) -> str:
    """A Data Manager filter for the tasks Label Studio changed after ``since`` (saving an
    annotation stamps its task's ``updated_at``). Label Studio parses only this time format."""
    after = (since - PULL_CLOCK_MARGIN).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    item = {
        "filter": "filter:tasks:updated_at",
        "operator": "greater",
        "type": "Datetime",
        "value": after,
    }
    return json.dumps({"filters": {"conjunction": "and", "items": [item]}})


def ls_pull_annotations(*, link: LabelStudioLink) -> PullSummary:
    """Store every Label Studio annotation of the linked project that Refrain does not have yet.

    Incremental: after a clean pull, the next one lists only the tasks Label Studio changed since
    (by their ``updated_at``), and an annotation this link already stored that Label Studio has not
    updated since is counted as existing without being read again; so a scheduled pull (the
    reconciliation for missed webhooks, ``ls_reconcile_links``) costs one short listing when
    nothing changed. An edit made in Label Studio since then is stored as a correction. A pull
    that could not store some annotation (a genre the version lacks) does not move the mark: the
    next pull reads those again.
    """
    summary = PullSummary()
    index = taxonomy_index_cached(link.project.taxonomy_version)
    email_for = EmailLookup(link)
    client = _client_for(link)
    started = timezone.now()
    since = link.last_pulled_at
    known = _known_annotation_ids(link)
    changed: dict[str, Any] = {} if since is None else {"query": _changed_tasks_query(since)}
    tasks = _ls_call(
        "task listing",
        lambda: list(
            client.tasks.list(project=link.ls_project_id, fields="all", page_size=100, **changed)
        ),
    )
    seen: set[int] = set()
    for ls_task in tasks:
        task = {"id": ls_task.id, "data": ls_task.data or {}}
        for raw in ls_task.annotations or []:
            annotation = raw if isinstance(raw, dict) else raw.model_dump()
            if isinstance(annotation.get("id"), int):
                seen.add(annotation["id"])
            if annotation.get("id") in known and not _changed_since(annotation, since):
                summary.existing += 1
                continue
            _ingest_counted(
                summary,
                f"LS task {ls_task.id} annotation {annotation.get('id')}",
                link=link,
                annotation=annotation,
                task=task,
                index=index,
                email_for=email_for,
            )
    email_for.remember()
    # Stored earlier, on tasks Label Studio has not changed since: not listed, still there.
    summary.existing += len(known - seen)
    if not summary.errors:
        # The start of this pull, not its end: an edit made while it ran is seen by the next one.
        link.last_pulled_at = started
        link.save(update_fields=["last_pulled_at"])
    return summary


def offline_email(annotation: Mapping[str, Any], known: Mapping[int, str] | None = None) -> str:
    """The annotator's email without asking Label Studio: from ``created_username`` or an
    expanded ``completed_by`` in the annotation, else ``known`` (user id → email: what the link
    learnt from pulls and webhooks, and a users file), else ``user-<id>``."""
    email, user_id = _email_or_user_id(annotation)
    if email:
        return email
    if user_id is None:
        return "unknown"
    return (known or {}).get(user_id) or f"user-{user_id}"


def ls_users_file_parse(text: str) -> dict[int, str]:
    """User id → email from a users file: Label Studio's ``GET /api/users/`` answer (a list of
    users, or a page with ``results``) or a plain ``{"<id>": "<email>"}`` object.

    Raises :class:`LabelStudioFormatError` naming what is wrong."""
    import json

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LabelStudioFormatError(f"users file is not JSON: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("results"), list):
        doc = doc["results"]
    out: dict[int, str] = {}
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = []
        for n, user in enumerate(doc):
            if not isinstance(user, dict) or "id" not in user or "email" not in user:
                raise LabelStudioFormatError(f"users file: entry {n} has no 'id' and 'email'")
            items.append((user["id"], user["email"]))
    else:
        raise LabelStudioFormatError("users file: expected a list of users or an id → email map")
    for user_id, email in items:
        try:
            uid = int(user_id)
        except (TypeError, ValueError):
            raise LabelStudioFormatError(f"users file: {user_id!r} is not a user id") from None
        if not isinstance(email, str) or "@" not in email:
            raise LabelStudioFormatError(f"users file: user {uid} has no email ({email!r})")
        out[uid] = email
    return out


def ls_import_export_file(
    *,
    link: LabelStudioLink,
    text: str,
    fmt: str | None = None,
    filename: str = "",
    users: Mapping[int, str] | None = None,
) -> PullSummary:
    """Store the annotations of a Label Studio export file (JSON, JSON_MIN or CSV; sniffed when
    ``fmt`` is None), as a pull would, without calling Label Studio. Idempotent with pulls and the
    webhook (the same keys); records Refrain cannot read are listed in ``errors``.

    Exports name annotators by Label Studio user id only: ``users`` (id → email, from a users
    file) and what the link learnt from earlier pulls and webhooks map them to people; ``users``
    is remembered on the link."""
    fmt = fmt or export_format_sniff(text, filename)
    if users:
        ls_users_remember(link=link, emails=users)
    known = _known_emails(link)
    summary = PullSummary()
    index = taxonomy_index_cached(link.project.taxonomy_version)
    for record in export_records(text, fmt):
        if record.error or record.task is None or record.annotation is None:
            summary.errors.append(f"{record.where}: {record.error}")
            continue
        _ingest_counted(
            summary,
            record.where,
            link=link,
            annotation=record.annotation,
            task=record.task,
            index=index,
            email_for=lambda annotation: offline_email(annotation, known),
        )
    return summary
