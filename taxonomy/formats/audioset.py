"""AudioSet: the music subtree as CSV, and the ontology as JSON (a DAG).

``audioset-csv``
    ``id,name,parent_id,...`` (the AudioSet music subtree export). An id on several rows has several
    parents, in row order; empty ``parent_id`` means a root. Derived columns (``depth``, ``path``,
    ``n_children``) are dropped; ``restrictions`` becomes a list.
``audioset-json``
    The AudioSet ontology: a list of ``{id, name, child_ids, ...}``. A DAG: a node's parents are all
    the nodes that list it in ``child_ids``, in file order (the first is the primary parent).
"""

from __future__ import annotations

from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc, line_of
from taxonomy.formats.parsed import Collector, ParsedTaxonomy, RawNode
from taxonomy.formats.text import check_width, csv_header, csv_records

_AUDIOSET_DERIVED = ("depth", "path", "n_children")


def parse_audioset_csv(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    records = csv_records(text)
    first = next(records, None)
    if first is None:
        raise TaxonomyFormatError("empty file")
    columns = csv_header(*first)
    missing = [c for c in ("id", "name", "parent_id") if c not in columns]
    if missing:
        raise TaxonomyFormatError(f"missing column(s) {', '.join(missing)}", line=first[0])
    header = [c.strip() for c in first[1]]
    i_id, i_name, i_parent = (columns.index(c) for c in ("id", "name", "parent_id"))
    collector = Collector("audioset-csv")
    for line, row in records:
        check_width(line, row, columns)
        key, name, parent = row[i_id].strip(), row[i_name], row[i_parent].strip()
        if not key:
            raise TaxonomyFormatError("empty id", line=line)
        raw = collector.by_key.get(key)
        if raw is not None:
            # Another row for a node with several parents (AudioSet is a DAG).
            if name.strip() != raw.name:
                raise TaxonomyFormatError(
                    f"node {key} is named '{name.strip()}' here but '{raw.name}' at line {raw.line}",
                    line=line,
                    node=key,
                )
            if not parent or not raw.parents or parent in raw.parents:
                raise TaxonomyFormatError(
                    f"duplicate row for node {key} '{raw.name}' under "
                    f"{parent or 'no parent'} (first at line {raw.line})",
                    line=line,
                    node=key,
                )
            raw.parents.append(parent)
            continue
        extra: dict[str, Any] = {}
        for i, column in enumerate(columns):
            if i in (i_id, i_name, i_parent) or column in _AUDIOSET_DERIVED:
                continue
            if column == "restrictions":
                extra[header[i]] = [r.strip() for r in row[i].split(",") if r.strip()]
            else:
                extra[header[i]] = row[i]
        collector.add(
            key,
            name,
            [parent] if parent else [],
            line=line,
            extra=extra,
            keyed=True,
            duplicate=f"id {key}",
        )
    return collector.finish()


def parse_audioset_json(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    value = (doc or JsonDoc(text)).value
    if not isinstance(value, list):
        raise TaxonomyFormatError("expected a JSON list of {id, name, child_ids} objects", line=1)
    collector = Collector("audioset-json")
    child_lists: list[tuple[RawNode, list[Any]]] = []
    for n, obj in enumerate(value):
        line = line_of(obj)
        if not isinstance(obj, dict):
            raise TaxonomyFormatError(f"item {n} is not an object", line=line)
        key = obj.get("id")
        if not isinstance(key, str) or not key.strip():
            raise TaxonomyFormatError(f"item {n} has no id", line=line)
        key = key.strip()
        child_ids = obj.get("child_ids", [])
        if not isinstance(child_ids, list) or not all(isinstance(c, str) for c in child_ids):
            raise TaxonomyFormatError(
                f"child_ids of node {key} must be a list of ids", line=line, node=key
            )
        extra = {k: v for k, v in obj.items() if k not in ("id", "name", "child_ids")}
        raw = collector.add(
            key, obj.get("name"), [], line=line, extra=extra, keyed=True, duplicate=f"id {key}"
        )
        child_lists.append((raw, child_ids))
    # Parents in file order: the first node to list a child is its primary parent.
    for raw, child_ids in child_lists:
        for child_id in child_ids:
            child = collector.by_key.get(child_id.strip())
            if child is None:
                raise TaxonomyFormatError(
                    f"{collector.describe(raw)} lists unknown child {child_id}",
                    line=raw.line,
                    node=raw.key,
                )
            if child.parents and child.parents[-1] == raw.key:
                raise TaxonomyFormatError(
                    f"{collector.describe(raw)} lists child {child_id} twice",
                    line=raw.line,
                    node=raw.key,
                )
            child.parents.append(raw.key)
    return collector.finish()
