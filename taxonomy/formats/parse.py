"""The entry point: pick the parser for a format, bound the node count, select a subtree."""

from __future__ import annotations

from collections.abc import Callable

from taxonomy.formats.audioset import parse_audioset_csv, parse_audioset_json
from taxonomy.formats.base import MAX_NODES, NODE_LIMIT, TaxonomyFormatError
from taxonomy.formats.discogs import parse_discogs
from taxonomy.formats.fma import parse_fma_csv
from taxonomy.formats.jsondoc import JsonDoc
from taxonomy.formats.nested_json import parse_nested_json
from taxonomy.formats.parsed import ParsedNode, ParsedTaxonomy
from taxonomy.formats.path_lists import parse_paths
from taxonomy.formats.sniff import sniff
from taxonomy.formats.text import decode
from taxonomy.formats.yaml_tree import parse_yaml_tree

PARSERS: dict[str, Callable[[str, JsonDoc | None], ParsedTaxonomy]] = {
    "fma-csv": parse_fma_csv,
    "audioset-csv": parse_audioset_csv,
    "discogs": parse_discogs,
    "nested-json": parse_nested_json,
    "audioset-json": parse_audioset_json,
    "paths": parse_paths,
    "yaml-tree": parse_yaml_tree,
}

#: The format names :func:`parse_taxonomy` accepts, in the order the docs list them.
FORMATS = tuple(PARSERS)


def parse_taxonomy(
    data: str | bytes,
    *,
    filename: str = "",
    format: str | None = None,
    root: str | None = None,
    max_nodes: int | None = None,
) -> ParsedTaxonomy:
    """Parse a taxonomy file and validate it.

    Parameters
    ----------
    data
        The file's content (bytes must be UTF-8).
    filename
        Used only to help detection (``.csv``, ``.json``, ``.yaml``).
    format
        One of :data:`FORMATS`; detected when ``None``.
    root
        Key (or escaped path) of a node: keep only it and its descendants, it becoming the one root.
        Parents outside the subtree are dropped (in AudioSet, ``/m/04rlf`` "Music").
    max_nodes
        Most nodes the file may hold (default :data:`MAX_NODES`); counted before ``root`` is
        applied, so the cost of parsing stays bounded.

    Raises
    ------
    TaxonomyFormatError
        Unknown format, malformed CSV/JSON/YAML, duplicate keys, unknown parents, cycles, empty or
        too long names, duplicate names among siblings, more than :data:`MAX_NODES` nodes or
        :data:`MAX_DEPTH` levels. The message names the line (and the node) at fault.
    """
    text = decode(data)
    doc: JsonDoc | None = None
    if format is None:
        format, doc = sniff(text, filename)
    elif format not in PARSERS:
        raise TaxonomyFormatError(
            f"unknown format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    limit = NODE_LIMIT.set(MAX_NODES if max_nodes is None else max_nodes)
    try:
        taxonomy = PARSERS[format](text, doc)
    finally:
        NODE_LIMIT.reset(limit)
    if root is not None:
        taxonomy = _subtree(taxonomy, root)
    return taxonomy


def _subtree(taxonomy: ParsedTaxonomy, root: str) -> ParsedTaxonomy:
    key = root if root in taxonomy else taxonomy.key_for_path(root)
    if key is None:
        raise TaxonomyFormatError(f"root {root!r} is not a node of this taxonomy", node=root)
    keep = {key}
    stack = [key]
    while stack:
        for child in taxonomy.children_of(stack.pop()):
            if child not in keep:
                keep.add(child)
                stack.append(child)
    nodes = []
    for node in taxonomy.nodes:
        if node.key in keep:
            parents = () if node.key == key else tuple(p for p in node.parent_keys if p in keep)
            nodes.append(ParsedNode(node.key, node.name, parents, node.source_line, node.extra))
    # Keeping the full order keeps parents first; the subtree root moves to the front.
    nodes.sort(key=lambda n: n.key != key)
    return ParsedTaxonomy(tuple(nodes), taxonomy.format)
