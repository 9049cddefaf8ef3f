"""Importing taxonomies as immutable versions.

Parsing is pure (``annotation.taxonomy_formats``); this module stores the result. Importing a tree
whose content is unchanged creates nothing; a changed tree becomes version n+1 with the list of nodes
added, renamed, moved and removed. Existing annotations keep pointing at the version they were made on.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.models import Taxonomy, TaxonomyNode, TaxonomyVersion
from annotation.taxonomy_formats import (
    ParsedNode,
    ParsedTaxonomy,
    TaxonomyDiff,
    diff_taxonomies,
    parse_taxonomy,
)


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


def taxonomy_import(
    *,
    name: str,
    data: str | bytes,
    filename: str = "",
    format: str | None = None,
    root: str | None = None,
    user: AbstractBaseUser | None = None,
) -> TaxonomyImportResult:
    """Parse ``data`` and store it as the next version of taxonomy ``name``.

    Raises
    ------
    annotation.taxonomy_formats.TaxonomyFormatError
        With the line or node at fault; nothing is written.
    """
    name = name.strip()
    if not name:
        raise ValueError("a taxonomy name is required")
    parsed = parse_taxonomy(data, filename=filename, format=format, root=root)
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
        rows = TaxonomyNode.objects.bulk_create(
            [
                TaxonomyNode(
                    version=version,
                    key=n.key,
                    name=n.name,
                    path=parsed.path_of(n.key),
                    depth=depth[n.key],
                    index=i,
                    is_leaf=n.key not in has_child,
                    extra=n.extra or {},
                )
                for i, n in enumerate(parsed.nodes)
            ],
            batch_size=2000,
        )
        by_key = {r.key: r for r in rows}
        for row, n in zip(rows, parsed.nodes, strict=True):
            if n.parent_keys:
                row.parent = by_key[n.parent_keys[0]]
        TaxonomyNode.objects.bulk_update(
            [r for r in rows if r.parent is not None], ["parent"], batch_size=2000
        )
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
