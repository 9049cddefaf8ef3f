"""Which format a taxonomy file is in, from its content and its file name."""

from __future__ import annotations

import csv
import re
from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc, line_of
from taxonomy.formats.text import decode

_YAML_START = re.compile(r"[^\s#\-\[{][^:]*:\s*(#.*)?")
_CSV_LAYOUTS = "fma-csv (genre_id,parent,title), audioset-csv (id,name,parent_id), discogs (label)"


def sniff(text: str, filename: str) -> tuple[str, JsonDoc | None]:
    if "\x00" in text:
        raise TaxonomyFormatError("matches no taxonomy format: binary data")
    stripped = text.lstrip()
    if not stripped:
        raise TaxonomyFormatError("empty file")
    suffix = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
    if stripped[0] in "[{" or suffix == "json":
        doc = JsonDoc(text)
        return _json_format(doc.value), doc
    if suffix in ("yaml", "yml"):
        return "yaml-tree", None

    lines = text.split("\n")
    first_line = next(line for line in lines if line.strip())
    header = {c.strip().lower() for c in next(csv.reader([first_line]))}
    if {"genre_id", "parent", "title"} <= header:
        return "fma-csv", None
    if {"id", "name", "parent_id"} <= header:
        return "audioset-csv", None
    if "label" in header and len(header) > 1:
        return "discogs", None
    if suffix in ("csv", "tsv"):
        raise TaxonomyFormatError(
            f"matches no taxonomy format: CSV header {first_line.strip()!r} is none of {_CSV_LAYOUTS}",
            line=lines.index(first_line) + 1,
        )
    significant = next(
        (line.strip() for line in lines if line.strip() and not line.strip().startswith("#")), ""
    )
    if significant == "---" or _YAML_START.fullmatch(significant):
        return "yaml-tree", None
    if "---" in significant:
        return "discogs", None
    return "paths", None


def _json_format(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise TaxonomyFormatError("no nodes: empty JSON list", line=1)
    if all(isinstance(item, str | list) for item in items):
        return "paths"
    if all(isinstance(item, dict) for item in items):
        if isinstance(value, list) and any("child_ids" in item for item in items):
            return "audioset-json"
        if all("name" in item or "children" in item for item in items):
            return "nested-json"
    kinds = [_json_kind(item) for item in items]
    mixed = next((i for i, kind in enumerate(kinds) if kind != kinds[0]), None)
    if mixed is not None:
        raise TaxonomyFormatError(
            f"matches no taxonomy format: item {mixed} of the JSON list is {kinds[mixed]} "
            f"but item 0 is {kinds[0]}",
            line=line_of(items[mixed]),
        )
    bad = next((item for item in items if isinstance(item, dict) and "name" not in item), None)
    if bad is not None:
        raise TaxonomyFormatError(
            "matches no taxonomy format: an object without a name (expected {name, children} "
            "objects or AudioSet {id, name, child_ids} objects)",
            line=line_of(bad),
        )
    raise TaxonomyFormatError(
        f"matches no taxonomy format: JSON holds {kinds[0]}, not {{name, children}} objects, "
        "AudioSet {id, name, child_ids} objects or path strings",
        line=1,
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str | list):
        return "a path"
    return (
        "a number"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else "a constant"
    )


def detect_format(data: str | bytes, filename: str = "") -> str:
    """Name the format of a taxonomy file (one of :data:`FORMATS`) from its content and file name.

    Raises :class:`TaxonomyFormatError` if it matches none (or is JSON that does not parse).
    """
    return sniff(decode(data), filename)[0]
