"""The clip explorer's reads: an :class:`~quality.explorer.filters.ExplorerQuery` turned into one
query over :class:`~quality.models.ClipSummary`, and one page of it.

Every filter is a condition on the summary table and every sort an index of it (the model's
``Meta.indexes``), so page 1 walks an index until it has a page, page 1000 skips 50,000 index
entries, and the count scans one narrow table; a handful of queries whatever the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy

from annotation.models import Project, TaxonomyNode
from annotation.selectors import taxonomy_index_cached
from quality.explorer.filters import NONE, SORTS, ExplorerQuery
from quality.models import ClipSummary
from refrain.errors import Invalid, NotFound

PAGE_SIZE = 50
#: The count stops here; the page then says "more than" (an exact count of a large match costs a
#: scan of every matching row per request and tells an admin nothing more).
COUNT_CAP = 10_000
COLUMNS = (
    "clip_id",
    "name",
    "duration_s",
    "clip_status",
    "label",
    "annotators",
    "n_annotators",
    "n_annotations",
    "agreement",
    "quality",
    "issue_id",
    "issue_type",
    "issue_status",
    "prediction",
    "prediction_prob",
    "model_number",
)


def _node(project: Project, raw: str) -> TaxonomyNode:
    index = taxonomy_index_cached(project.taxonomy_version)
    node = index.lookup(raw)
    if node is None:
        raise Invalid(f"node={raw!r} is neither a key nor a path of this project's taxonomy")
    return node


def _user_id(project: Project, username: str) -> int:
    user_id = (
        get_user_model()
        .objects.filter(username=username, memberships__project=project)
        .values_list("pk", flat=True)
        .first()
    )
    if user_id is None:
        raise Invalid(f"annotator={username!r} is not a member of this project")
    return int(user_id)


def _ordering(query: ExplorerQuery) -> list[OrderBy]:
    column = SORTS[query.sort_key]
    if column == "clip":
        return [F("clip").desc() if query.descending else F("clip").asc()]
    if column in ClipSummary.PLAIN_SORTS:
        # Never NULL: one ascending index serves both ways (read backwards to descend).
        if query.descending:
            return [F(column).desc(), F("clip").desc()]
        return [F(column).asc(), F("clip").asc()]
    if query.descending:
        # NULLs last both ways: "-quality" lists the best scored clips first, not the unscored
        # (the model's second index, ``..._d_idx``, is in this order).
        return [F(column).desc(nulls_last=True), F("clip").desc()]
    return [F(column).asc(nulls_last=True), F("clip").asc()]


def explorer_queryset(*, project: Project, query: ExplorerQuery) -> QuerySet[ClipSummary]:
    """The summary rows matching ``query``'s filters, in its sort order (raises ``Invalid``)."""
    qs = ClipSummary.objects.filter(project=project)
    if query.node:
        # Stored label sets are closed under ancestors: "the node or a descendant" = "has the node".
        qs = qs.filter(label_node_ids__contains=f" {_node(project, query.node).pk} ")
    if query.status in ("ready", "failed"):
        qs = qs.filter(clip_status=query.status)
    elif query.status == "labelled":
        qs = qs.filter(label_annotation_id__isnull=False)
    elif query.status == "unlabelled":
        qs = qs.filter(label_annotation_id__isnull=True)
    if query.issue_type:
        qs = qs.filter(issue_type="" if query.issue_type == NONE else query.issue_type)
    if query.issue_status:
        qs = qs.filter(issue_status="" if query.issue_status == NONE else query.issue_status)
    if query.annotator:
        qs = qs.filter(annotator_ids__contains=f" {_user_id(project, query.annotator)} ")
    if query.quality is not None:
        lo, hi = query.quality
        if lo is not None:
            qs = qs.filter(quality__gte=lo)
        if hi is not None:
            qs = qs.filter(quality__lte=hi)
    if query.disagreement is not None:
        split = Q(n_annotators__gte=2, agreement__lt=1.0)
        qs = qs.filter(split) if query.disagreement else qs.exclude(split)
    if query.q:
        qs = qs.filter(search__contains=query.q.lower())
    return qs.order_by(*_ordering(query))


@dataclass(frozen=True)
class ExplorerPage:
    rows: list[dict[str, Any]]
    count: int
    capped: bool  # True: ``count`` is COUNT_CAP and more clips match
    page: int
    n_pages: int
    page_size: int

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.page_size + 1 if self.rows else 0

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.page_size + len(self.rows)

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.n_pages


def explorer_page(
    *, project: Project, query: ExplorerQuery, page_size: int = PAGE_SIZE
) -> ExplorerPage:
    """One page of the explorer (three queries: the capped count, the page's ids, their rows; one
    more to resolve a node or annotator filter). A page past the end raises ``NotFound``.

    The ids come first, alone: OFFSET then walks only the sort's index (every sort index ends with
    the clip id), and only the page's 50 rows are read from the table (a "deferred join").
    """
    qs = explorer_queryset(project=project, query=query)
    count = qs.order_by()[: COUNT_CAP + 1].count()
    capped = count > COUNT_CAP
    count = min(count, COUNT_CAP)
    n_pages = max(1, -(-count // page_size))
    offset = (query.page - 1) * page_size
    if not capped and query.page > n_pages:
        raise NotFound(
            f"page {query.page} is past the end: {count} clip(s) match, {n_pages} page(s) of "
            f"{page_size}"
        )
    ids = list(qs.values_list("clip_id", flat=True)[offset : offset + page_size])
    by_id = {r["clip_id"]: r for r in ClipSummary.objects.filter(pk__in=ids).values(*COLUMNS)}
    rows = [by_id[i] for i in ids if i in by_id]
    if capped and not rows and query.page > 1:
        raise NotFound(f"page {query.page} is past the end of the clips that match")
    if capped:
        n_pages = max(n_pages, query.page + (1 if len(rows) == page_size else 0))
    return ExplorerPage(rows, count, capped, query.page, n_pages, page_size)


def explorer_clip_ids(*, project: Project, query: ExplorerQuery, limit: int) -> list[int]:
    """The ids of up to ``limit`` + 1 clips matching ``query`` (all pages), for bulk actions."""
    qs = explorer_queryset(project=project, query=query)
    return list(qs.values_list("clip_id", flat=True)[: limit + 1])
