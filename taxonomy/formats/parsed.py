"""The parsed taxonomy, and the validation every format's parser collects its nodes through."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from taxonomy.formats.base import (
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    NODE_LIMIT,
    TaxonomyFormatError,
)
from taxonomy.formats.pathnames import escape_name, join_path, split_path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ParsedNode:
    """One node as read from a file.

    ``key`` is the source id where the format has one (FMA ``genre_id``, AudioSet id, a JSON
    ``genre_id``/``id``/``key``), else the node's escaped full path. ``parent_keys`` is ``()`` for a
    root and has more than one key only in DAG formats; the first is the primary parent.
    """

    key: str
    name: str
    parent_keys: tuple[str, ...] = ()
    source_line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def parent_key(self) -> str | None:
        """The primary parent's key, ``None`` for a root."""
        return self.parent_keys[0] if self.parent_keys else None


@dataclass(frozen=True)
class ParsedTaxonomy:
    """A validated taxonomy: ``nodes`` come parents before children (depth-first, file order).

    Build one with :func:`parse_taxonomy`, or with :meth:`from_nodes` from nodes in any order (for
    instance the stored rows of an earlier version, to diff against). Direct construction checks only
    that keys are unique and each parent comes before its children.
    """

    nodes: tuple[ParsedNode, ...]
    format: str
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _paths: list[str] = field(init=False, repr=False, compare=False)
    _depths: list[int] = field(init=False, repr=False, compare=False)
    _children: dict[str, list[str]] = field(init=False, repr=False, compare=False)
    _by_path: dict[str, str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        paths: list[str] = []
        depths: list[int] = []
        children: dict[str, list[str]] = {}
        for i, node in enumerate(self.nodes):
            if node.key in index:
                raise TaxonomyFormatError(
                    f"duplicate key {node.key!r}", line=node.source_line, node=node.key
                )
            for parent in node.parent_keys:
                if parent not in index:
                    raise TaxonomyFormatError(
                        f"parent {parent!r} of node {node.key!r} is unknown or comes after it",
                        line=node.source_line,
                        node=node.key,
                    )
                children[parent].append(node.key)
            if len(set(node.parent_keys)) != len(node.parent_keys):
                raise TaxonomyFormatError(
                    f"node {node.key!r} lists a parent twice", line=node.source_line, node=node.key
                )
            index[node.key] = i
            children[node.key] = []
            if node.parent_keys:
                p = index[node.parent_keys[0]]
                paths.append(f"{paths[p]}/{escape_name(node.name)}")
                depths.append(depths[p] + 1)
            else:
                paths.append(escape_name(node.name))
                depths.append(0)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_paths", paths)
        object.__setattr__(self, "_depths", depths)
        object.__setattr__(self, "_children", children)

    @classmethod
    def from_nodes(cls, nodes: Iterable[ParsedNode], *, format: str = "custom") -> ParsedTaxonomy:
        """Validate nodes given in any order (as a parsed file is) and sort them parents first."""
        collector = Collector(format, noun="node")
        for node in nodes:
            collector.add(
                node.key,
                node.name,
                list(node.parent_keys),
                line=node.source_line,
                extra=node.extra,
                keyed=True,
                duplicate=f"key {node.key!r}",
            )
        return collector.finish()

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[ParsedNode]:
        return iter(self.nodes)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        """All keys, parents first."""
        return [node.key for node in self.nodes]

    def node(self, key: str) -> ParsedNode:
        """The node with this key (``KeyError`` if there is none)."""
        return self.nodes[self._index[key]]

    def index_of(self, key: str) -> int:
        """Position of the node in ``nodes`` (the column of the node in (N, K) arrays)."""
        return self._index[key]

    def path_of(self, key: str) -> str:
        """Escaped names from the root down the primary parents, joined with ``/``."""
        return self._paths[self._index[key]]

    def depth_of(self, key: str) -> int:
        """Number of primary-parent steps to a root (0 for a root)."""
        return self._depths[self._index[key]]

    def children_of(self, key: str) -> list[str]:
        """Keys of the nodes that list ``key`` among their parents, in node order."""
        if key not in self._children:
            raise KeyError(key)
        return list(self._children[key])

    def roots(self) -> list[str]:
        return [node.key for node in self.nodes if not node.parent_keys]

    def ancestors_of(self, key: str) -> list[str]:
        """Every ancestor through every parent (a DAG node has several lines), parents-first order."""
        seen: set[str] = set()
        stack = list(self.node(key).parent_keys)
        while stack:
            k = stack.pop()
            if k not in seen:
                seen.add(k)
                stack.extend(self.nodes[self._index[k]].parent_keys)
        return sorted(seen, key=self._index.__getitem__)

    def key_for_path(self, path: str) -> str | None:
        """The key of the node at this (escaped) path, or ``None``; spaces around ``/`` are ignored."""
        if self._by_path is None:
            object.__setattr__(
                self, "_by_path", {p: n.key for p, n in zip(self._paths, self.nodes, strict=True)}
            )
        assert self._by_path is not None
        return self._by_path.get(join_path(split_path(path)))

    def parent_indices(self) -> list[int]:
        """(K,) index of each node's primary parent, -1 for roots (the ``parents`` array convention)."""
        index = self._index
        return [index[n.parent_keys[0]] if n.parent_keys else -1 for n in self.nodes]

    @property
    def max_depth(self) -> int:
        return max(self._depths, default=0)


@dataclass(slots=True)
class RawNode:
    key: str
    name: str
    parents: list[str]
    line: int | None
    extra: dict[str, Any]
    keyed: bool
    explicit: bool = True


class Collector:
    """Gathers raw nodes in file order, then validates and sorts them in :meth:`finish`."""

    def __init__(self, format: str, *, noun: str = "node") -> None:
        self.format = format
        self.noun = noun
        self.raws: list[RawNode] = []
        self.by_key: dict[str, RawNode] = {}

    def describe(self, raw: RawNode) -> str:
        if raw.keyed:
            return f"{self.noun} {raw.key} '{raw.name}'"
        return f"{self.noun} '{raw.key}'"

    def add(
        self,
        key: str,
        name: Any,
        parents: list[str],
        *,
        line: int | None,
        extra: dict[str, Any] | None = None,
        keyed: bool,
        duplicate: str,
        explicit: bool = True,
    ) -> RawNode:
        what = (
            f"{self.noun} {key}"
            if keyed
            else f"a {self.noun} under '{parents[0]}'"
            if parents
            else f"a root {self.noun}"
        )
        name = check_name(name, line=line, node=key, what=what)
        if not key:
            raise TaxonomyFormatError(f"empty key for {self.noun} '{name}'", line=line)
        if len(key) > MAX_KEY_LENGTH:
            raise TaxonomyFormatError(
                f"key of {self.noun} '{name}' is longer than {MAX_KEY_LENGTH} characters",
                line=line,
                node=key,
            )
        first = self.by_key.get(key)
        if first is not None:
            at = f" (first at line {first.line})" if first.line is not None else ""
            raise TaxonomyFormatError(f"duplicate {duplicate}{at}", line=line, node=key)
        limit = NODE_LIMIT.get()
        if len(self.raws) >= limit:
            raise TaxonomyFormatError(f"more than {limit} nodes", line=line, node=key)
        raw = RawNode(key, name, parents, line, extra if extra is not None else {}, keyed, explicit)
        self.raws.append(raw)
        self.by_key[key] = raw
        return raw

    def finish(self) -> ParsedTaxonomy:
        raws, by_key = self.raws, self.by_key
        if not raws:
            raise TaxonomyFormatError("no nodes")
        position = {raw.key: i for i, raw in enumerate(raws)}
        children: dict[str, list[int]] = {raw.key: [] for raw in raws}
        pending = [0] * len(raws)
        for i, raw in enumerate(raws):
            if len(set(raw.parents)) != len(raw.parents):
                raise TaxonomyFormatError(
                    f"{self.describe(raw)} lists the same parent twice", line=raw.line, node=raw.key
                )
            for parent in raw.parents:
                if parent not in by_key:
                    raise TaxonomyFormatError(
                        f"unknown parent {parent} for {self.describe(raw)}",
                        line=raw.line,
                        node=raw.key,
                    )
                children[parent].append(i)
            pending[i] = len(raw.parents)

        # Depth-first from the roots, children in file order; a child with several parents waits
        # until the last of them is placed (Kahn's algorithm with a stack).
        order: list[int] = []
        stack = [i for i in range(len(raws) - 1, -1, -1) if not raws[i].parents]
        while stack:
            i = stack.pop()
            order.append(i)
            ready = []
            for c in children[raws[i].key]:
                pending[c] -= 1
                if pending[c] == 0:
                    ready.append(c)
            stack.extend(reversed(ready))
        if len(order) < len(raws):
            self._raise_cycle(pending, position)

        self._check_siblings()
        depth: dict[str, int] = {}
        for i in order:
            raw = raws[i]
            d = depth[raw.parents[0]] + 1 if raw.parents else 0
            if d > MAX_DEPTH:
                raise TaxonomyFormatError(
                    f"{self.describe(raw)} is deeper than {MAX_DEPTH} levels",
                    line=raw.line,
                    node=raw.key,
                )
            depth[raw.key] = d
        nodes = tuple(
            ParsedNode(r.key, r.name, tuple(r.parents), r.line, r.extra)
            for r in (raws[i] for i in order)
        )
        return ParsedTaxonomy(nodes, self.format)

    def _raise_cycle(self, pending: list[int], position: dict[str, int]) -> None:
        raws = self.raws
        stuck = {i for i, p in enumerate(pending) if p > 0}
        # Every stuck node has a stuck parent; walking up from one must come back to a node seen.
        walk: dict[int, int] = {}
        i = min(stuck)
        while i not in walk:
            walk[i] = len(walk)
            i = next(position[p] for p in raws[i].parents if position[p] in stuck)
        cycle = [j for j, _ in sorted(walk.items(), key=lambda kv: kv[1])][walk[i] :]
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        first = raws[cycle[0]]
        chain = " -> ".join(self.describe(raws[j]) for j in [*cycle, cycle[0]])
        raise TaxonomyFormatError(f"parent cycle: {chain}", line=first.line, node=first.key)

    def _check_siblings(self) -> None:
        seen: dict[tuple[str | None, str], RawNode] = {}
        for raw in self.raws:
            folded = raw.name.casefold()
            parents: list[str | None] = [*raw.parents] if raw.parents else [None]
            for parent in parents:
                other = seen.setdefault((parent, folded), raw)
                if other is raw:
                    continue
                under = (
                    f"under {self.describe(self.by_key[parent])}"
                    if parent is not None
                    else "among the roots"
                )
                at = f" (line {other.line})" if other.line is not None else ""
                raise TaxonomyFormatError(
                    f"duplicate name {under}: {self.describe(raw)} and {self.describe(other)}{at}",
                    line=raw.line,
                    node=raw.key,
                )


def check_name(value: object, *, line: int | None, node: str | None, what: str) -> str:
    """Strip a name and reject non-strings, empty names, control characters and long names."""
    if not isinstance(value, str):
        raise TaxonomyFormatError(
            f"name of {what} must be a string, not {type(value).__name__}", line=line, node=node
        )
    name = value.strip()
    if not name:
        raise TaxonomyFormatError(f"empty name for {what}", line=line, node=node)
    if len(name) > MAX_NAME_LENGTH:
        raise TaxonomyFormatError(
            f"name of {what} is longer than {MAX_NAME_LENGTH} characters", line=line, node=node
        )
    if _CONTROL.search(name):
        raise TaxonomyFormatError(
            f"name of {what} contains a control character: {name!r}", line=line, node=node
        )
    return name


class PathTree:
    """Adds escaped paths to a collector, creating missing ancestors (``paths``, ``discogs``, YAML)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def add(
        self, names: Sequence[str], *, line: int | None, extra: dict[str, Any] | None = None
    ) -> None:
        collector = self.collector
        if len(names) > MAX_DEPTH + 1:
            raise TaxonomyFormatError(f"path deeper than {MAX_DEPTH} levels", line=line)
        parent: str | None = None
        for depth, name in enumerate(names):
            last = depth == len(names) - 1
            checked = check_name(
                name,
                line=line,
                node=None,
                what=f"a node under '{parent}'" if parent else "a root node",
            )
            key = f"{parent}/{escape_name(checked)}" if parent else escape_name(checked)
            raw = collector.by_key.get(key)
            if raw is None:
                collector.add(
                    key,
                    checked,
                    [parent] if parent else [],
                    line=line,
                    extra=extra if last else None,
                    keyed=False,
                    duplicate=f"path '{key}'",
                    explicit=last,
                )
            elif last:
                if raw.explicit:
                    at = f" (first at line {raw.line})" if raw.line is not None else ""
                    raise TaxonomyFormatError(f"duplicate path '{key}'{at}", line=line, node=key)
                raw.explicit = True
                if extra:
                    raw.extra = extra
            parent = key
