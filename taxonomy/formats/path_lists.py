"""Lists of paths, one a line or a JSON list.

``paths``
    One path per line (``Rock/Punk``; ``#`` comment lines and blank lines skipped), or a JSON list of
    path strings (or of lists of names). Missing ancestors are created. Keys are paths.
"""

from __future__ import annotations

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc, line_of
from taxonomy.formats.parsed import Collector, ParsedTaxonomy, PathTree
from taxonomy.formats.pathnames import split_path


def parse_paths(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    tree = PathTree(Collector("paths"))
    if doc is None and text.lstrip().startswith("["):
        doc = JsonDoc(text)
    if doc is not None:
        items = doc.value
        if not isinstance(items, list):
            raise TaxonomyFormatError("expected a JSON list of paths", line=line_of(items) or 1)
        lines = iter(doc.string_lines())
        for n, item in enumerate(items):
            if isinstance(item, str):
                line = next(lines)
                tree.add(_checked_split(item, line), line=line)
            elif isinstance(item, list) and item and all(isinstance(x, str) for x in item):
                line = next(lines)
                for _ in item[1:]:
                    next(lines)
                tree.add([x.strip() for x in item], line=line)
            else:
                raise TaxonomyFormatError(
                    f"item {n} of the JSON list is not a path string or a list of names",
                    line=line_of(item),
                )
    else:
        for number, text_line in enumerate(text.split("\n"), start=1):
            path = text_line.strip()
            if path and not path.startswith("#"):
                tree.add(_checked_split(path, number), line=number)
    return tree.collector.finish()


def _checked_split(path: str, line: int) -> list[str]:
    names = split_path(path)
    if not all(names):
        raise TaxonomyFormatError(f"empty name in path {path!r}", line=line)
    return names
