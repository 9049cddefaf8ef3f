"""Importing taxonomies as immutable versions.

Parsing is pure (``taxonomy.formats``); this module stores the result. Importing a tree
whose content is unchanged creates nothing; a changed tree becomes version n+1 with the list of nodes
added, renamed, moved and removed. Existing annotations keep pointing at the version they were made on.

Size: more than ``REFRAIN_MAX_TAXONOMY_NODES`` nodes is refused with the reason. Above
``REFRAIN_TAXONOMY_INLINE_MAX_NODES``, :func:`taxonomy_import_submit` hands the write to a worker
(``cpu`` queue) as a :class:`TaxonomyImportJob` whose progress the API and the page show.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from annotation.models import Taxonomy, TaxonomyImportJob, TaxonomyNode, TaxonomyVersion
from taxonomy.diff import TaxonomyDiff, diff_taxonomies
from taxonomy.formats import ParsedNode, ParsedTaxonomy, TaxonomyFormatError, parse_taxonomy

log = logging.getLogger(__name__)
IMPORT_BATCH = 2000


@dataclass(frozen=True)
class TaxonomyImportResult:
    taxonomy: Taxonomy
    version: TaxonomyVersion
    created: bool  # False when the content matched the latest version
    diff: TaxonomyDiff | None  # None for a first version

    def summary(self) -> str:
        v = self.version
        if not self.created:
            return f"{v}: unchanged ({v.n_nodes} nodes); no new version"
        head = f"{v}: {v.n_nodes} nodes, depth {v.max_depth + 1}, format {v.source_format}"
        if v.is_dag:
            head += ", DAG"
        if self.diff is None:
            return head
        c = v.changes
        return (
            f"{head}; changes since v{v.number - 1}: {len(c['added'])} added, "
            f"{len(c['renamed'])} renamed, {len(c['moved'])} moved, {len(c['removed'])} removed"
        )


def parsed_from_version(version: TaxonomyVersion) -> ParsedTaxonomy:
    """Rebuild the parsed form of a stored version (for diffs and exports)."""
    nodes = list(version.nodes.order_by("index"))
    key_of = {n.id: n.key for n in nodes}
    # Secondary parents in the order they were stored (the through table's id), so that a
    # re-import does not report a reordering as a change.
    extra: dict[int, list[str]] = {}
    through = TaxonomyNode.extra_parents.through
    for child_id, parent_id in (
        through.objects.filter(from_taxonomynode__version=version)
        .order_by("id")
        .values_list("from_taxonomynode_id", "to_taxonomynode_id")
    ):
        extra.setdefault(child_id, []).append(key_of[parent_id])
    parsed = tuple(
        ParsedNode(
            key=n.key,
            name=n.name,
            parent_keys=tuple(([key_of[n.parent_id]] if n.parent_id else []) + extra.get(n.id, [])),
            source_line=None,
            extra=n.extra,
        )
        for n in nodes
    )
    return ParsedTaxonomy(nodes=parsed, format=version.source_format)


def _diff_as_json(diff: TaxonomyDiff) -> dict[str, list]:
    return {
        "added": list(diff.added),
        "removed": list(diff.removed),
        "renamed": [asdict(r) for r in diff.renamed],
        "moved": [asdict(m) for m in diff.moved],
        "parents_changed": [asdict(p) for p in diff.parents_changed],
    }


def _parse(
    data: str | bytes, *, filename: str, format: str | None, root: str | None
) -> ParsedTaxonomy:
    max_nodes = settings.REFRAIN_MAX_TAXONOMY_NODES
    try:
        return parse_taxonomy(
            data, filename=filename, format=format, root=root, max_nodes=max_nodes
        )
    except TaxonomyFormatError as exc:
        if exc.message == f"more than {max_nodes} nodes":
            raise TaxonomyFormatError(
                f"{exc.message}: larger than this installation accepts "
                f"(REFRAIN_MAX_TAXONOMY_NODES = {max_nodes})",
                line=exc.line,
                node=exc.node,
            ) from exc
        raise


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("a taxonomy name is required")
    if len(name) > 200 or "\x00" in name:
        raise ValueError("a taxonomy name is at most 200 characters, without NUL characters")
    return name


def taxonomy_import(
    *,
    name: str,
    data: str | bytes,
    filename: str = "",
    format: str | None = None,
    root: str | None = None,
    user: AbstractBaseUser | None = None,
    progress: Callable[[int, int], None] | None = None,
    parsed: ParsedTaxonomy | None = None,
) -> TaxonomyImportResult:
    """Parse ``data`` and store it as the next version of taxonomy ``name``.

    ``progress(written, total)`` is called after each batch of nodes is written (inside the
    transaction: report it somewhere other readers see, such as the cache). ``parsed`` skips the
    parse when the caller has just parsed ``data`` with the same options.

    Raises
    ------
    taxonomy.formats.TaxonomyFormatError
        With the line or node at fault, or more than ``REFRAIN_MAX_TAXONOMY_NODES`` nodes; nothing
        is written.
    """
    name = _checked_name(name)
    if parsed is None:
        parsed = _parse(data, filename=filename, format=format, root=root)
    raw = data.encode() if isinstance(data, str) else data
    digest = hashlib.sha256(raw + f"\0{parsed.format}\0{root or ''}".encode()).hexdigest()

    with transaction.atomic():
        taxonomy, _ = Taxonomy.objects.select_for_update().get_or_create(name=name)
        latest = taxonomy.versions.order_by("-number").first()
        if latest is not None and latest.content_sha256 == digest:
            return TaxonomyImportResult(taxonomy, latest, created=False, diff=None)
        diff = diff_taxonomies(parsed_from_version(latest), parsed) if latest else None
        if diff is not None and not (
            diff.added or diff.removed or diff.renamed or diff.moved or diff.parents_changed
        ):
            return TaxonomyImportResult(taxonomy, latest, created=False, diff=diff)
        depth = {n.key: parsed.depth_of(n.key) for n in parsed.nodes}
        has_child = {p for n in parsed.nodes for p in n.parent_keys}
        version = TaxonomyVersion.objects.create(
            taxonomy=taxonomy,
            number=(latest.number + 1) if latest else 1,
            source_format=parsed.format,
            source_name=filename[:255],
            content_sha256=digest,
            n_nodes=len(parsed.nodes),
            max_depth=max(depth.values(), default=0),
            is_dag=any(len(n.parent_keys) > 1 for n in parsed.nodes),
            changes=_diff_as_json(diff) if diff else {},
            created_by=user,
        )
        # Parsed nodes come parents first, so each batch can name its parents' ids as it is
        # inserted (no second pass of updates); a parent not yet written, which a parser that
        # breaks that order would cause, is linked afterwards.
        by_key: dict[str, TaxonomyNode] = {}
        late: list[TaxonomyNode] = []
        total = len(parsed.nodes)
        for start in range(0, total, IMPORT_BATCH):
            batch = []
            for i, n in enumerate(parsed.nodes[start : start + IMPORT_BATCH], start=start):
                parent = by_key.get(n.parent_keys[0]) if n.parent_keys else None
                row = TaxonomyNode(
                    version=version,
                    key=n.key,
                    name=n.name,
                    path=parsed.path_of(n.key),
                    depth=depth[n.key],
                    index=i,
                    is_leaf=n.key not in has_child,
                    extra=n.extra or {},
                    parent=parent,
                )
                if n.parent_keys and parent is None:
                    late.append(row)
                batch.append(row)
            for row in TaxonomyNode.objects.bulk_create(batch):
                by_key[row.key] = row
            if progress is not None:
                progress(min(start + IMPORT_BATCH, total), total)
        rows_parents = {n.key: n.parent_keys for n in parsed.nodes}
        for row in late:
            row.parent = by_key[rows_parents[row.key][0]]
        TaxonomyNode.objects.bulk_update(late, ["parent"], batch_size=IMPORT_BATCH)
        through = TaxonomyNode.extra_parents.through
        through.objects.bulk_create(
            [
                through(from_taxonomynode_id=by_key[n.key].id, to_taxonomynode_id=by_key[p].id)
                for n in parsed.nodes
                for p in n.parent_keys[1:]
            ],
            batch_size=2000,
        )
    return TaxonomyImportResult(taxonomy, version, created=True, diff=diff)


# --- large imports on a worker --------------------------------------------------------------------


def _progress_key(job_id: int) -> str:
    return f"refrain:taxonomy-import:{job_id}:written"


def taxonomy_import_submit(
    *,
    name: str,
    data: bytes,
    filename: str = "",
    format: str | None = None,
    root: str | None = None,
    user: AbstractBaseUser | None = None,
) -> TaxonomyImportResult | TaxonomyImportJob:
    """Import now when small; queue a :class:`TaxonomyImportJob` when above the inline limit.

    The file is parsed here either way, so a malformed or oversized file is refused at once, with
    the reason, and nothing is stored.
    """
    name = _checked_name(name)
    filename = filename.replace("\x00", "")
    parsed = _parse(data, filename=filename, format=format, root=root)
    if len(parsed.nodes) <= settings.REFRAIN_TAXONOMY_INLINE_MAX_NODES:
        return taxonomy_import(
            name=name,
            data=data,
            filename=filename,
            format=format,
            root=root,
            user=user,
            parsed=parsed,
        )
    # annotation.tasks imports this module (its tasks call these services).
    from annotation.tasks import import_taxonomy

    job = TaxonomyImportJob.objects.create(
        name=name.strip()[:200],
        filename=filename[:255],
        format=format or "",
        root=root or "",
        data=data,
        n_nodes_total=len(parsed.nodes),
        created_by=user if user is not None and user.is_authenticated else None,
    )
    import_taxonomy.delay_on_commit(job.pk)
    return job


def taxonomy_import_job_run(*, job_id: int) -> TaxonomyImportJob:
    """Run a queued job once: claim it, import, record the outcome, drop the uploaded file."""
    claimed = TaxonomyImportJob.objects.filter(
        pk=job_id, status=TaxonomyImportJob.Status.QUEUED
    ).update(status=TaxonomyImportJob.Status.RUNNING, started_at=timezone.now())
    job = TaxonomyImportJob.objects.select_related("created_by").get(pk=job_id)
    if not claimed:  # another delivery of the same message took it
        return job
    key = _progress_key(job.pk)

    def progress(written: int, total: int) -> None:
        # The nodes are written in one transaction, invisible to readers until it commits; the
        # count goes to the shared cache instead.
        cache.set(key, written, timeout=24 * 3600)

    fields: dict[str, Any]
    try:
        result = taxonomy_import(
            name=job.name,
            data=bytes(job.data),
            filename=job.filename,
            format=job.format or None,
            root=job.root or None,
            user=job.created_by,
            progress=progress,
        )
    except (TaxonomyFormatError, ValueError) as exc:
        fields = {"status": TaxonomyImportJob.Status.FAILED, "error": str(exc)}
    except Exception as exc:
        log.exception("taxonomy import job %s failed", job.pk)
        fields = {
            "status": TaxonomyImportJob.Status.FAILED,
            "error": f"internal error: {type(exc).__name__}",
        }
    else:
        fields = {
            "status": TaxonomyImportJob.Status.DONE,
            "version": result.version,
            "summary": result.summary(),
            "n_nodes_written": job.n_nodes_total if result.created else 0,
        }
    TaxonomyImportJob.objects.filter(pk=job.pk).update(
        **fields, data=b"", finished_at=timezone.now()
    )
    cache.delete(key)
    job.refresh_from_db()
    return job


def taxonomy_import_jobs_fail_stale(*, now: datetime | None = None) -> int:
    """Mark failed the jobs still running after Celery's hard time limit: their worker was killed
    (by the limit or otherwise) and nothing else would ever finish them. Returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    stale = TaxonomyImportJob.objects.filter(
        status=TaxonomyImportJob.Status.RUNNING, started_at__lt=cutoff
    )
    return stale.update(
        status=TaxonomyImportJob.Status.FAILED,
        error="the worker stopped before finishing (no node was kept); import the file again",
        data=b"",
        finished_at=now,
    )


def taxonomy_import_job_progress(*, job: TaxonomyImportJob) -> dict[str, Any]:
    """What the API and the page show of a job: status, nodes written of the total, the outcome."""
    written = job.n_nodes_written
    if job.status == TaxonomyImportJob.Status.RUNNING:
        written = int(cache.get(_progress_key(job.pk)) or 0)
    total = job.n_nodes_total
    return {
        "id": job.pk,
        "name": job.name,
        "filename": job.filename,
        "status": job.status,
        "n_nodes_total": total,
        "n_nodes_written": written,
        "percent": round(100 * written / total, 1) if total else 0.0,
        "error": job.error,
        "summary": job.summary,
        "taxonomy_version_id": job.version_id,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }
