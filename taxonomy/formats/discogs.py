"""Discogs ``Genre---Style`` lists.

``discogs``
    ``Genre---Style`` lists: a CSV with a ``label`` column (``index``, ``genre``, ``style`` optional and
    checked against ``label``), or plain lines. A line without ``---`` is a genre. Keys are paths.
"""

from __future__ import annotations

from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc
from taxonomy.formats.parsed import Collector, ParsedTaxonomy, PathTree
from taxonomy.formats.text import check_width, csv_header, csv_records, parse_int


def parse_discogs(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    tree = PathTree(Collector("discogs"))
    first = next(csv_records(text), None)
    if first is not None and "label" in csv_header(*first):
        records = csv_records(text)
        next(records)
        columns = csv_header(*first)
        i_label = columns.index("label")
        for line, row in records:
            check_width(line, row, columns)
            label = row[i_label].strip()
            names = _discogs_names(label, line)
            extra: dict[str, Any] = {"label": label}
            for i, column in enumerate(columns):
                if column == "index":
                    extra["index"] = parse_int(row[i], "index", line=line)
                elif column in ("genre", "style"):
                    part = names[0] if column == "genre" else names[-1] if len(names) > 1 else ""
                    if row[i].strip() != part:
                        raise TaxonomyFormatError(
                            f"{column} '{row[i].strip()}' does not match label '{label}'", line=line
                        )
                elif i != i_label:
                    extra[column] = row[i]
            tree.add(names, line=line, extra=extra)
    else:
        for number, text_line in enumerate(text.split("\n"), start=1):
            label = text_line.strip()
            if label and not label.startswith("#"):
                names = _discogs_names(label, number)
                tree.add(names, line=number, extra={"label": label} if len(names) > 1 else None)
    return tree.collector.finish()


def _discogs_names(label: str, line: int) -> list[str]:
    names = [part.strip() for part in label.split("---")]
    if len(names) > 2 or not all(names):
        raise TaxonomyFormatError(f"expected 'Genre---Style' or 'Genre', got {label!r}", line=line)
    return names
