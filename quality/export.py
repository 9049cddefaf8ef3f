"""A project's labels as a file: one row per clip, the label Refrain stands by, and how sure it is.

Reads only (a selector in the house style's sense), shared by the API, the page download and
``manage.py export_labels``.

The ``labels`` column is the clip's current label set as :func:`annotation.selectors.current_labels`
decides it (the consensus where several people labelled the clip, a reviewer's correction from then
on, else the newest annotation), written as its most specific nodes' taxonomy paths joined by ``|``.
That is the layout ``import_clips --manifest`` reads (``path`` + ``labels``, other columns kept as
metadata), so an export is a manifest: importing it into another project recreates the labels.

Columns, in order (:data:`COLUMNS`):

==================== ==============================================================================
``clip_id``          the clip's external id (from its import), else ``refrain-<id>``
``path``             the audio file
``labels``           most specific label paths, ``|``-joined (empty: not labelled yet)
``label_source``     the newest annotation carrying that label set (``user:<name>``, ``import:<file>``)
``n_annotations``    annotations of the clip (every opinion, rejected second opinions included)
``consensus_quality`` CROWDLAB-style quality of the consensus (0..1, higher = surer; empty if none)
``agreement``        share of the clip's annotators who agree with the consensus
``issue_status``     the clip's newest label issue: open, routed, in_review, confirmed, rejected...
``issue_type``       its type (wrong_sibling, wrong_branch, missing_genre, extra_genre, structural)
``taxonomy_version`` the version the label's nodes belong to (``<taxonomy> v<n>``)
``status``           ``ready`` or ``failed``
``error``            why a failed clip failed
``duration_s``       seconds of audio
``sha256``           content hash
``refrain_id``       the clip's id in Refrain
==================== ==============================================================================

In the CSV, a text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) is written with a leading ``'`` (:func:`neutralise_formula`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from django.db.models import Count
from django.http import StreamingHttpResponse

from annotation.models import Annotation, Clip, Project, TaxonomyNode, TaxonomyVersion
from annotation.selectors import TaxonomyIndex, current_labels, taxonomy_index_cached
from quality.models import ClipConsensus, LabelIssue

ExportFormat = Literal["csv", "jsonl"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl")
CONTENT_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
# Ids per IN list: SQLite (the embedded default) refuses statements with more than 32,766 parameters.
IN_CHUNK = 10_000
COLUMNS = (
    "clip_id",
    "path",
    "labels",
    "label_source",
    "n_annotations",
    "consensus_quality",
    "agreement",
    "issue_status",
    "issue_type",
    "taxonomy_version",
    "status",
    "error",
    "duration_s",
    "sha256",
    "refrain_id",
)


def most_specific_paths(node_ids: Iterable[int], index: TaxonomyIndex) -> list[str]:
    """Paths of the nodes of a label set that are no other member's ancestor, in taxonomy order."""
    ids = [n for n in node_ids if n in index.by_id]
    implied = {a for n in ids for a in index.ancestors[n]}
    keep = sorted((n for n in ids if n not in implied), key=lambda n: index.by_id[n].index)
    return [index.by_id[n].path for n in keep]


def label_export_rows(
    *, project: Project, labelled_only: bool = False, clip_ids: list[int] | None = None
) -> Iterator[dict[str, Any]]:
    """One dict per clip of ``project`` (by id), keys :data:`COLUMNS`; see the module doc. With
    ``clip_ids``, only those clips (the clip explorer's selection).

    A fixed number of queries (clips, current labels, annotation counts, consensus, issues, one per
    taxonomy version that labels use) plus one per 10,000 labelled clips for the label sources.
    """
    current = current_labels(project=project, clip_ids=clip_ids)
    label_of = dict(zip(current.clip_ids, current.node_ids, strict=True))
    ann_of = dict(zip(current.clip_ids, current.annotation_ids, strict=True))
    sources: dict[int, str] = {}
    for start in range(0, len(current.annotation_ids), IN_CHUNK):
        chunk = current.annotation_ids[start : start + IN_CHUNK]
        sources.update(Annotation.objects.filter(pk__in=chunk).values_list("pk", "source"))
    scope = {} if clip_ids is None else {"clip_id__in": clip_ids}
    counts: dict[int, int] = dict(
        Annotation.objects.filter(clip__project=project, **scope)
        .values("clip_id")
        .annotate(n=Count("id"))
        .values_list("clip_id", "n")
    )
    consensus = {
        c: (q, a)
        for c, q, a in ClipConsensus.objects.filter(project=project, **scope).values_list(
            "clip_id", "quality", "agreement"
        )
    }
    issues: dict[int, tuple[str, str]] = {}
    for clip_id, status, kind in (
        LabelIssue.objects.filter(project=project, **scope)
        .order_by("created_at", "id")
        .values_list("clip_id", "status", "issue_type")
    ):
        issues[clip_id] = (status, kind)  # the newest wins
    # Labels normally use the project's version; a label made on an older version keeps its nodes.
    version_of_node = dict(
        TaxonomyNode.objects.filter(
            pk__in={n for ids in current.node_ids for n in ids}
        ).values_list("pk", "version_id")
    )
    versions = {
        v.pk: v
        for v in TaxonomyVersion.objects.filter(
            pk__in=set(version_of_node.values()) | {project.taxonomy_version_id}
        ).select_related("taxonomy")
    }
    indexes = {pk: taxonomy_index_cached(v) for pk, v in versions.items()}

    clips = Clip.objects.filter(project=project).order_by("pk")
    if clip_ids is not None:
        clips = clips.filter(pk__in=clip_ids)
    for clip in clips.only(
        "pk", "external_id", "storage", "storage_key", "status", "error", "duration_s", "sha256"
    ).iterator(chunk_size=5000):
        node_ids = label_of.get(clip.pk, [])
        if labelled_only and not node_ids:
            continue
        version_id = version_of_node.get(node_ids[0]) if node_ids else None
        labels = most_specific_paths(node_ids, indexes[version_id]) if version_id else []
        quality, agreement = consensus.get(clip.pk, (None, None))
        issue_status, issue_type = issues.get(clip.pk, ("", ""))
        yield {
            "clip_id": clip.external_id or f"refrain-{clip.pk}",
            "path": clip.file_path,
            "labels": labels,
            "label_source": sources.get(ann_of.get(clip.pk, -1), ""),
            "n_annotations": counts.get(clip.pk, 0),
            "consensus_quality": None if quality is None else round(float(quality), 4),
            "agreement": None if agreement is None else round(float(agreement), 4),
            "issue_status": issue_status,
            "issue_type": issue_type,
            "taxonomy_version": str(versions[version_id]) if version_id else "",
            "status": clip.status,
            "error": clip.error,
            "duration_s": clip.duration_s,
            "sha256": clip.sha256 or "",
            "refrain_id": clip.pk,
        }


# A spreadsheet runs a cell that starts with one of these as a formula (``=HYPERLINK(...)`` in a file
# name). OWASP's advice for CSV: prefix such a cell with a single quote, shown as text. JSON Lines
# stays raw: it is for programs, and they must not see the quote.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        value = "|".join(value)
    if isinstance(value, str):
        return neutralise_formula(value)
    return value


def export_chunks(rows: Iterable[dict[str, Any]], fmt: ExportFormat) -> Iterator[str]:
    """The rows as text pieces of a CSV (header first) or JSON Lines file, for streaming."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for n, row in enumerate(rows, start=1):
        writer.writerow([_csv_cell(row[c]) for c in COLUMNS])
        if n % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def export_filename(project: Project, fmt: ExportFormat) -> str:
    return f"{project.slug}-labels.{fmt}"


def labels_download(
    project: Project,
    fmt: ExportFormat,
    *,
    labelled_only: bool = False,
    clip_ids: list[int] | None = None,
) -> StreamingHttpResponse:
    """The export as a streamed attachment (the API endpoint, the page link and the explorer's
    selection share it)."""
    rows = label_export_rows(project=project, labelled_only=labelled_only, clip_ids=clip_ids)
    response = StreamingHttpResponse(export_chunks(rows, fmt), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{export_filename(project, fmt)}"'
    return response
