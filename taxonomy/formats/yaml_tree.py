"""YAML trees of mappings and lists.

``yaml-tree``
    A YAML tree of mappings and lists (the MedleyDB instrument taxonomy): mapping keys and list items
    are names. Keys are paths. Needs PyYAML.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from taxonomy.formats.base import TaxonomyFormatError
from taxonomy.formats.jsondoc import JsonDoc
from taxonomy.formats.parsed import Collector, ParsedTaxonomy, PathTree

_YAML_NULL = "tag:yaml.org,2002:null"


def parse_yaml_tree(text: str, doc: JsonDoc | None) -> ParsedTaxonomy:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is present where the tests run
        raise TaxonomyFormatError("YAML taxonomies need PyYAML, which is not installed") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise TaxonomyFormatError(
            f"invalid YAML: {e.problem or e.context}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as e:
        raise TaxonomyFormatError(f"invalid YAML: {e}") from None
    if root is None:
        raise TaxonomyFormatError("no nodes")
    if not isinstance(root, yaml.MappingNode | yaml.SequenceNode):
        raise TaxonomyFormatError("expected a YAML mapping or list", line=root.start_mark.line + 1)

    def entries(container: Any) -> Iterator[tuple[Any, Any]]:
        """(name scalar, value or None) for each node that a mapping or list holds."""
        if isinstance(container, yaml.MappingNode):
            yield from container.value
            return
        for item in container.value:
            if isinstance(item, yaml.ScalarNode):
                yield item, None
            elif isinstance(item, yaml.MappingNode):
                yield from item.value
            else:
                raise TaxonomyFormatError(
                    "a list inside a list has no name", line=item.start_mark.line + 1
                )

    tree = PathTree(Collector("yaml-tree"))
    stack: list[tuple[Iterator[tuple[Any, Any]], list[str]]] = [(entries(root), [])]
    while stack:
        iterator, names = stack[-1]
        entry = next(iterator, None)
        if entry is None:
            stack.pop()
            continue
        key_node, value = entry
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_NULL:
            raise TaxonomyFormatError("expected a name", line=line)
        path = [*names, key_node.value]
        tree.add(path, line=line)
        if value is None or (isinstance(value, yaml.ScalarNode) and value.tag == _YAML_NULL):
            continue
        if isinstance(value, yaml.ScalarNode):
            raise TaxonomyFormatError(
                f"expected a list or mapping under '{key_node.value}', got '{value.value}'",
                line=value.start_mark.line + 1,
            )
        stack.append((entries(value), path))
    return tree.collector.finish()
