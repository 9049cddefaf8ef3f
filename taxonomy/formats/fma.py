"""The Free Music Archive's ``genres.csv``.

``fma-csv``
    The Free Music Archive ``genres.csv`` layout: ``genre_id,#tracks,parent,title,top_level``
    (``genre_id``, ``parent`` and ``title`` are required, the rest optional). ``parent`` 0 means a
    root. Key: ``genre_id``. ``top_level``, when present, must be the genre's root. Extra: ``#tracks``
    (int) and any unknown column.
"""

from __future__ import annotations

from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc
from taxonomy.formats.parsed import Collector, ParsedTaxonomy
from taxonomy.formats.text import check_width, csv_header, csv_records, parse_int


def parse_fma_csv(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    records = csv_records(text)
    first = next(records, None)
    if first is None:
        raise TaxonomyFormatError("empty file")
    columns = csv_header(*first)
    missing = [c for c in ("genre_id", "parent", "title") if c not in columns]
    if missing:
        raise TaxonomyFormatError(f"missing column(s) {', '.join(missing)}", line=first[0])
    header = [c.strip() for c in first[1]]
    i_id, i_parent, i_title = (columns.index(c) for c in ("genre_id", "parent", "title"))
    i_top = columns.index("top_level") if "top_level" in columns else None
    collector = Collector("fma-csv", noun="genre")
    top_levels: dict[str, tuple[int, int]] = {}
    for line, row in records:
        check_width(line, row, columns)
        genre_id = parse_int(row[i_id], "genre_id", line=line)
        if genre_id <= 0:
            raise TaxonomyFormatError(
                f"genre_id {genre_id} must be positive (parent 0 means a root)", line=line
            )
        key = str(genre_id)
        parent = parse_int(row[i_parent], f"parent of genre {key}", line=line, node=key)
        if parent < 0:
            raise TaxonomyFormatError(
                f"parent {parent} of genre {key} is negative", line=line, node=key
            )
        extra: dict[str, Any] = {}
        for i, column in enumerate(columns):
            if i in (i_id, i_parent, i_title):
                continue
            if i == i_top:
                top_levels[key] = (
                    parse_int(row[i], f"top_level of genre {key}", line=line, node=key),
                    line,
                )
            elif column == "#tracks" and row[i].strip():
                extra[header[i]] = parse_int(row[i], f"#tracks of genre {key}", line=line, node=key)
            else:
                extra[header[i]] = row[i]
        collector.add(
            key,
            row[i_title],
            [str(parent)] if parent else [],
            line=line,
            extra=extra,
            keyed=True,
            duplicate=f"genre_id {key}",
        )
    taxonomy = collector.finish()
    root_of: dict[str, str] = {}
    for node in taxonomy.nodes:
        root_of[node.key] = root_of[node.parent_keys[0]] if node.parent_keys else node.key
        top = top_levels.get(node.key)
        if top is not None and str(top[0]) != root_of[node.key]:
            raise TaxonomyFormatError(
                f"top_level {top[0]} of genre {node.key} '{node.name}' is not its root "
                f"genre {root_of[node.key]}",
                line=top[1],
                node=node.key,
            )
    return taxonomy
