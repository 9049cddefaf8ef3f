"""Nested ``{name, children}`` JSON objects.

``nested-json``
    ``{"name", "children"}`` objects, or a list of them. Key from ``genre_id``, ``id`` or ``key`` (the
    first present), else the path. A single top-level object named ``root`` (any case) without a key
    is a container, not a node. Other fields go to ``extra``.
"""

from __future__ import annotations

from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc, line_of
from taxonomy.formats.parsed import Collector, ParsedTaxonomy, check_name
from taxonomy.formats.pathnames import escape_name

_KEY_FIELDS = ("genre_id", "id", "key")


def parse_nested_json(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    value = (doc or JsonDoc(text)).value
    if isinstance(value, dict):
        name = value.get("name")
        is_container = (
            not any(k in value for k in _KEY_FIELDS)
            and (name is None or (isinstance(name, str) and name.strip().casefold() == "root"))
            and isinstance(value.get("children"), list)
        )
        tops = value["children"] if is_container else [value]
        where = "children" if is_container else ""
    elif isinstance(value, list):
        tops, where = value, ""
    else:
        raise TaxonomyFormatError("expected a JSON object or a list of objects", line=1)

    collector = Collector("nested-json")
    # Depth-first in document order: (object, parent key, parent path, JSON location).
    stack: list[tuple[Any, str | None, str | None, str]] = [
        (obj, None, None, f"{where}[{i}]") for i, obj in reversed(list(enumerate(tops)))
    ]
    while stack:
        obj, parent_key, parent_path, where = stack.pop()
        line = line_of(obj)
        if not isinstance(obj, dict):
            raise TaxonomyFormatError(f"expected an object with a name at {where or 'top level'}")
        id_field = next((k for k in _KEY_FIELDS if k in obj), None)
        name = obj.get("name")
        what = (
            f"node {obj[id_field]}"
            if id_field
            else f"a node under '{parent_path}'"
            if parent_path
            else "a root node"
        )
        node = str(obj[id_field]).strip() if id_field else None
        name = check_name(name, line=line, node=node, what=what)
        path = f"{parent_path}/{escape_name(name)}" if parent_path else escape_name(name)
        if id_field is not None:
            raw_key = obj[id_field]
            if isinstance(raw_key, bool) or not isinstance(raw_key, int | str):
                raise TaxonomyFormatError(
                    f"{id_field} of node '{path}' must be a string or an integer",
                    line=line,
                    node=path,
                )
            key = str(raw_key).strip()
            duplicate = f"{id_field} {key} for node '{path}'"
        else:
            key, duplicate = path, f"path '{path}'"
        children = obj.get("children")
        if children is None:
            children = []
        if not isinstance(children, list):
            raise TaxonomyFormatError(
                f"children of node '{path}' must be a list", line=line, node=key
            )
        extra = {k: v for k, v in obj.items() if k not in ("name", "children", id_field)}
        collector.add(
            key,
            name,
            [parent_key] if parent_key is not None else [],
            line=line,
            extra=extra,
            keyed=id_field is not None,
            duplicate=duplicate,
        )
        stack.extend(
            (child, key, path, f"{where}.children[{i}]")
            for i, child in reversed(list(enumerate(children)))
        )
    return collector.finish()
