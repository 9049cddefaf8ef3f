"""Parse taxonomy files into plain dataclasses, and diff two versions of one taxonomy.

Pure Python (standard library, plus PyYAML for ``yaml-tree`` when it is importable): no Django import.
The ``import_taxonomy`` service stores a :class:`ParsedTaxonomy` as a versioned Taxonomy with its
TaxonomyNode rows, and uses :func:`diff_taxonomies` to say what changed since the last version.

Formats (``ParsedTaxonomy.format``)
----------------------------------
``fma-csv``
    The Free Music Archive ``genres.csv`` layout: ``genre_id,#tracks,parent,title,top_level``
    (``genre_id``, ``parent`` and ``title`` are required, the rest optional). ``parent`` 0 means a
    root. Key: ``genre_id``. ``top_level``, when present, must be the genre's root. Extra: ``#tracks``
    (int) and any unknown column.
``audioset-csv``
    ``id,name,parent_id,...`` (the AudioSet music subtree export). An id on several rows has several
    parents, in row order; empty ``parent_id`` means a root. Derived columns (``depth``, ``path``,
    ``n_children``) are dropped; ``restrictions`` becomes a list.
``discogs``
    ``Genre---Style`` lists: a CSV with a ``label`` column (``index``, ``genre``, ``style`` optional and
    checked against ``label``), or plain lines. A line without ``---`` is a genre. Keys are paths.
``nested-json``
    ``{"name", "children"}`` objects, or a list of them. Key from ``genre_id``, ``id`` or ``key`` (the
    first present), else the path. A single top-level object named ``root`` (any case) without a key
    is a container, not a node. Other fields go to ``extra``.
``audioset-json``
    The AudioSet ontology: a list of ``{id, name, child_ids, ...}``. A DAG: a node's parents are all
    the nodes that list it in ``child_ids``, in file order (the first is the primary parent).
``paths``
    One path per line (``Rock/Punk``; ``#`` comment lines and blank lines skipped), or a JSON list of
    path strings (or of lists of names). Missing ancestors are created. Keys are paths.
``yaml-tree``
    A YAML tree of mappings and lists (the MedleyDB instrument taxonomy): mapping keys and list items
    are names. Keys are paths. Needs PyYAML.

Paths
-----
A path joins names from a root down the *primary* parents with ``/``. A name that contains ``/`` or
``\\`` is escaped with a backslash (``Funk \\/ Soul/Afrobeat``); :func:`join_path` and
:func:`split_path` convert. Path lists in files use the same escaping; spaces around each ``/`` are
stripped. Keys of path-keyed formats are these escaped paths, measured in the whole file even when
``root`` selects a subtree, so they stay stable across partial imports.

Depth is 0 for roots.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "MAX_DEPTH",
    "MAX_INPUT_CHARS",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_NODES",
    "Moved",
    "ParentsChanged",
    "ParsedNode",
    "ParsedTaxonomy",
    "Renamed",
    "TaxonomyDiff",
    "TaxonomyFormatError",
    "detect_format",
    "diff_taxonomies",
    "escape_name",
    "join_path",
    "parse_taxonomy",
    "split_path",
]

MAX_NODES = 100_000
# The node limit of the parse under way (parse_taxonomy's ``max_nodes``); parsers read it while they
# collect, so an oversized file stops at the first node too many rather than after the whole file.
_NODE_LIMIT: ContextVar[int] = ContextVar("taxonomy_node_limit", default=MAX_NODES)
MAX_NAME_LENGTH = 255
MAX_KEY_LENGTH = 1024  # path keys: up to MAX_DEPTH escaped names
MAX_DEPTH = 32  # roots are depth 0
MAX_INPUT_CHARS = 64 * 1024 * 1024

FORMATS = (
    "fma-csv",
    "audioset-csv",
    "discogs",
    "nested-json",
    "audioset-json",
    "paths",
    "yaml-tree",
)

_KEY_FIELDS = ("genre_id", "id", "key")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT = re.compile(r"[+-]?\d+")
_YAML_NULL = "tag:yaml.org,2002:null"


class TaxonomyFormatError(ValueError):
    """A taxonomy file is malformed; the message starts with the line at fault where one is known.

    ``line`` is 1-based; ``node`` is the key (or path) of the node at fault, where there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        node: str | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.node = node
        self.column = column
        where = ""
        if line is not None:
            where = f"line {line}" + (f" column {column}" if column is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------------------------------
# Paths


def escape_name(name: str) -> str:
    """Escape ``\\`` and ``/`` in one name so that it can be joined into a path."""
    return name.replace("\\", "\\\\").replace("/", "\\/")


def join_path(names: Iterable[str]) -> str:
    """Join names (root first) into an escaped path: ``["Funk / Soul", "Disco"]`` → ``Funk \\/ Soul/Disco``."""
    return "/".join(escape_name(n) for n in names)


def split_path(path: str) -> list[str]:
    """Split an escaped path into names, stripping spaces around each; the inverse of :func:`join_path`.

    A backslash that escapes neither ``/`` nor ``\\`` is kept as it is.
    """
    if "\\" not in path:
        return [part.strip() for part in path.split("/")]
    names: list[str] = []
    current: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch == "\\" and i + 1 < n and path[i + 1] in "/\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == "/":
            names.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    names.append("".join(current).strip())
    return names


# --------------------------------------------------------------------------------------------------
# Parsed taxonomy


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
        collector = _Collector(format, noun="node")
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


# --------------------------------------------------------------------------------------------------
# Validation shared by every format


@dataclass(slots=True)
class _Raw:
    key: str
    name: str
    parents: list[str]
    line: int | None
    extra: dict[str, Any]
    keyed: bool
    explicit: bool = True


class _Collector:
    """Gathers raw nodes in file order, then validates and sorts them in :meth:`finish`."""

    def __init__(self, format: str, *, noun: str = "node") -> None:
        self.format = format
        self.noun = noun
        self.raws: list[_Raw] = []
        self.by_key: dict[str, _Raw] = {}

    def describe(self, raw: _Raw) -> str:
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
    ) -> _Raw:
        what = (
            f"{self.noun} {key}"
            if keyed
            else f"a {self.noun} under '{parents[0]}'"
            if parents
            else f"a root {self.noun}"
        )
        name = _check_name(name, line=line, node=key, what=what)
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
        limit = _NODE_LIMIT.get()
        if len(self.raws) >= limit:
            raise TaxonomyFormatError(f"more than {limit} nodes", line=line, node=key)
        raw = _Raw(key, name, parents, line, extra if extra is not None else {}, keyed, explicit)
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
        seen: dict[tuple[str | None, str], _Raw] = {}
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


def _check_name(value: object, *, line: int | None, node: str | None, what: str) -> str:
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


class _PathTree:
    """Adds escaped paths to a collector, creating missing ancestors (``paths``, ``discogs``, YAML)."""

    def __init__(self, collector: _Collector) -> None:
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
            checked = _check_name(
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


# --------------------------------------------------------------------------------------------------
# Reading text, CSV and JSON


def _decode(data: str | bytes) -> str:
    if len(data) > MAX_INPUT_CHARS:
        raise TaxonomyFormatError(f"file is larger than {MAX_INPUT_CHARS} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise TaxonomyFormatError(
                f"not UTF-8 text (byte {data[e.start]:#04x})", line=line
            ) from None
    else:
        text = data.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line, fields)`` for each non-blank CSV record."""
    reader = csv.reader(io.StringIO(text), strict=True)
    done = 0
    try:
        for row in reader:
            start, done = done + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield start, row
    except csv.Error as e:
        raise TaxonomyFormatError(f"malformed CSV: {e}", line=reader.line_num) from None


def _header(line: int, row: list[str]) -> list[str]:
    columns = [c.strip().lower() for c in row]
    for i, c in enumerate(columns):
        if c in columns[:i]:
            raise TaxonomyFormatError(f"duplicate column {c!r} in the header", line=line)
    return columns


def _check_width(line: int, row: list[str], columns: list[str]) -> None:
    if len(row) != len(columns):
        raise TaxonomyFormatError(
            f"expected {len(columns)} columns ({','.join(columns)}), got {len(row)}", line=line
        )


def _int(value: str, what: str, *, line: int, node: str | None = None) -> int:
    value = value.strip()
    if not _INT.fullmatch(value):
        raise TaxonomyFormatError(f"{what} {value!r} is not an integer", line=line, node=node)
    return int(value)


class _LineDict(dict[str, Any]):
    line: int | None = None


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled loop: linear time
_JSON_BRACE = re.compile(r"[{}]")


class _JsonDoc:
    """A parsed JSON document whose objects (``_LineDict``) know the line they start on.

    The C parser calls ``object_pairs_hook`` as each object closes; the k-th call therefore belongs
    to the k-th ``}`` of the text outside strings, whose ``{`` a brace-matching scan finds. JSON
    strings cannot hold a raw newline, so blanking them first keeps every line where it was.
    """

    def __init__(self, text: str) -> None:
        closed: list[_LineDict] = []
        duplicates: dict[int, str] = {}

        def hook(pairs: list[tuple[str, Any]]) -> _LineDict:
            d = _LineDict(pairs)
            if len(d) != len(pairs):
                seen: set[str] = set()
                for k, _ in pairs:
                    if k in seen:
                        duplicates.setdefault(len(closed), k)
                    seen.add(k)
            closed.append(d)
            return d

        try:
            self.value: Any = json.loads(text, object_pairs_hook=hook)
        except json.JSONDecodeError as e:
            raise TaxonomyFormatError(
                f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno
            ) from None
        except RecursionError:
            raise TaxonomyFormatError("invalid JSON: nested too deeply") from None
        except ValueError as e:  # e.g. an integer with too many digits
            raise TaxonomyFormatError(f"invalid JSON: {e}") from None
        self._text = text

        bare = _JSON_STRING.sub('""', text)
        line, position = 1, 0
        open_lines: list[int] = []
        object_lines: list[int] = []
        for m in _JSON_BRACE.finditer(bare):
            start = m.start()
            line += bare.count("\n", position, start)
            position = start
            if bare[start] == "{":
                open_lines.append(line)
            else:
                object_lines.append(open_lines.pop())
        for d, object_line in zip(closed, object_lines, strict=True):
            d.line = object_line
        for i, k in duplicates.items():
            raise TaxonomyFormatError(
                f"invalid JSON: duplicate field {k!r} in one object", line=closed[i].line
            )

    def string_lines(self) -> list[int]:
        """Line of every string (object keys included) in document order."""
        text = self._text
        lines: list[int] = []
        line, position = 1, 0
        for m in _JSON_STRING.finditer(text):
            start = m.start()
            line += text.count("\n", position, start)
            position = start
            lines.append(line)
        return lines


def _line(value: Any) -> int | None:
    return value.line if isinstance(value, _LineDict) else None


# --------------------------------------------------------------------------------------------------
# Formats


def _parse_fma_csv(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    records = _csv_records(text)
    first = next(records, None)
    if first is None:
        raise TaxonomyFormatError("empty file")
    columns = _header(*first)
    missing = [c for c in ("genre_id", "parent", "title") if c not in columns]
    if missing:
        raise TaxonomyFormatError(f"missing column(s) {', '.join(missing)}", line=first[0])
    header = [c.strip() for c in first[1]]
    i_id, i_parent, i_title = (columns.index(c) for c in ("genre_id", "parent", "title"))
    i_top = columns.index("top_level") if "top_level" in columns else None
    collector = _Collector("fma-csv", noun="genre")
    top_levels: dict[str, tuple[int, int]] = {}
    for line, row in records:
        _check_width(line, row, columns)
        genre_id = _int(row[i_id], "genre_id", line=line)
        if genre_id <= 0:
            raise TaxonomyFormatError(
                f"genre_id {genre_id} must be positive (parent 0 means a root)", line=line
            )
        key = str(genre_id)
        parent = _int(row[i_parent], f"parent of genre {key}", line=line, node=key)
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
                    _int(row[i], f"top_level of genre {key}", line=line, node=key),
                    line,
                )
            elif column == "#tracks" and row[i].strip():
                extra[header[i]] = _int(row[i], f"#tracks of genre {key}", line=line, node=key)
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


_AUDIOSET_DERIVED = ("depth", "path", "n_children")


def _parse_audioset_csv(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    records = _csv_records(text)
    first = next(records, None)
    if first is None:
        raise TaxonomyFormatError("empty file")
    columns = _header(*first)
    missing = [c for c in ("id", "name", "parent_id") if c not in columns]
    if missing:
        raise TaxonomyFormatError(f"missing column(s) {', '.join(missing)}", line=first[0])
    header = [c.strip() for c in first[1]]
    i_id, i_name, i_parent = (columns.index(c) for c in ("id", "name", "parent_id"))
    collector = _Collector("audioset-csv")
    for line, row in records:
        _check_width(line, row, columns)
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


def _parse_discogs(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    tree = _PathTree(_Collector("discogs"))
    first = next(_csv_records(text), None)
    if first is not None and "label" in _header(*first):
        records = _csv_records(text)
        next(records)
        columns = _header(*first)
        i_label = columns.index("label")
        for line, row in records:
            _check_width(line, row, columns)
            label = row[i_label].strip()
            names = _discogs_names(label, line)
            extra: dict[str, Any] = {"label": label}
            for i, column in enumerate(columns):
                if column == "index":
                    extra["index"] = _int(row[i], "index", line=line)
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


def _parse_paths(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    tree = _PathTree(_Collector("paths"))
    if doc is None and text.lstrip().startswith("["):
        doc = _JsonDoc(text)
    if doc is not None:
        items = doc.value
        if not isinstance(items, list):
            raise TaxonomyFormatError("expected a JSON list of paths", line=_line(items) or 1)
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
                    line=_line(item),
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


def _parse_nested_json(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    value = (doc or _JsonDoc(text)).value
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

    collector = _Collector("nested-json")
    # Depth-first in document order: (object, parent key, parent path, JSON location).
    stack: list[tuple[Any, str | None, str | None, str]] = [
        (obj, None, None, f"{where}[{i}]") for i, obj in reversed(list(enumerate(tops)))
    ]
    while stack:
        obj, parent_key, parent_path, where = stack.pop()
        line = _line(obj)
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
        name = _check_name(name, line=line, node=node, what=what)
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


def _parse_audioset_json(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
    value = (doc or _JsonDoc(text)).value
    if not isinstance(value, list):
        raise TaxonomyFormatError("expected a JSON list of {id, name, child_ids} objects", line=1)
    collector = _Collector("audioset-json")
    child_lists: list[tuple[_Raw, list[Any]]] = []
    for n, obj in enumerate(value):
        line = _line(obj)
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


def _parse_yaml_tree(text: str, doc: _JsonDoc | None) -> ParsedTaxonomy:
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

    tree = _PathTree(_Collector("yaml-tree"))
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


_PARSERS: dict[str, Callable[[str, _JsonDoc | None], ParsedTaxonomy]] = {
    "fma-csv": _parse_fma_csv,
    "audioset-csv": _parse_audioset_csv,
    "discogs": _parse_discogs,
    "nested-json": _parse_nested_json,
    "audioset-json": _parse_audioset_json,
    "paths": _parse_paths,
    "yaml-tree": _parse_yaml_tree,
}

_YAML_START = re.compile(r"[^\s#\-\[{][^:]*:\s*(#.*)?")
_CSV_LAYOUTS = "fma-csv (genre_id,parent,title), audioset-csv (id,name,parent_id), discogs (label)"


# --------------------------------------------------------------------------------------------------
# Detection and the entry point


def _sniff(text: str, filename: str) -> tuple[str, _JsonDoc | None]:
    if "\x00" in text:
        raise TaxonomyFormatError("matches no taxonomy format: binary data")
    stripped = text.lstrip()
    if not stripped:
        raise TaxonomyFormatError("empty file")
    suffix = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
    if stripped[0] in "[{" or suffix == "json":
        doc = _JsonDoc(text)
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
            line=_line(items[mixed]),
        )
    bad = next((item for item in items if isinstance(item, dict) and "name" not in item), None)
    if bad is not None:
        raise TaxonomyFormatError(
            "matches no taxonomy format: an object without a name (expected {name, children} "
            "objects or AudioSet {id, name, child_ids} objects)",
            line=_line(bad),
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
    return _sniff(_decode(data), filename)[0]


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
    text = _decode(data)
    doc: _JsonDoc | None = None
    if format is None:
        format, doc = _sniff(text, filename)
    elif format not in _PARSERS:
        raise TaxonomyFormatError(
            f"unknown format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    limit = _NODE_LIMIT.set(MAX_NODES if max_nodes is None else max_nodes)
    try:
        taxonomy = _PARSERS[format](text, doc)
    finally:
        _NODE_LIMIT.reset(limit)
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


# --------------------------------------------------------------------------------------------------
# Diff


@dataclass(frozen=True)
class Renamed:
    key: str
    old_name: str
    new_name: str


@dataclass(frozen=True)
class Moved:
    """The primary parent changed (``None`` = root)."""

    key: str
    old_parent: str | None
    new_parent: str | None


@dataclass(frozen=True)
class ParentsChanged:
    """A DAG node kept its primary parent but gained or lost another one."""

    key: str
    old_parents: tuple[str, ...]
    new_parents: tuple[str, ...]


@dataclass(frozen=True)
class TaxonomyDiff:
    """What changed between two versions, matching nodes by key.

    Path-keyed formats (``paths``, ``discogs``, ``yaml-tree``, unkeyed ``nested-json``) have no ids,
    so there a renamed or moved node shows as removed + added (with its descendants).
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed: tuple[Renamed, ...]
    moved: tuple[Moved, ...]
    parents_changed: tuple[ParentsChanged, ...] = ()
    extra_changed: tuple[str, ...] = ()

    @property
    def structure_changed(self) -> bool:
        """Whether any node was added, removed, renamed, moved or re-linked."""
        return bool(
            self.added or self.removed or self.renamed or self.moved or self.parents_changed
        )

    def __bool__(self) -> bool:
        return self.structure_changed or bool(self.extra_changed)

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added",
            f"{len(self.removed)} removed",
            f"{len(self.renamed)} renamed",
            f"{len(self.moved)} moved",
        ]
        if self.parents_changed:
            parts.append(f"{len(self.parents_changed)} with other parents changed")
        if self.extra_changed:
            parts.append(f"{len(self.extra_changed)} with other fields changed")
        return ", ".join(parts)


def diff_taxonomies(old: ParsedTaxonomy, new: ParsedTaxonomy) -> TaxonomyDiff:
    """Compare two versions by key; results follow ``new``'s order (``removed``: ``old``'s)."""
    added: list[str] = []
    renamed: list[Renamed] = []
    moved: list[Moved] = []
    parents_changed: list[ParentsChanged] = []
    extra_changed: list[str] = []
    for node in new.nodes:
        if node.key not in old:
            added.append(node.key)
            continue
        before = old.node(node.key)
        if before.name != node.name:
            renamed.append(Renamed(node.key, before.name, node.name))
        if before.parent_key != node.parent_key:
            moved.append(Moved(node.key, before.parent_key, node.parent_key))
        elif before.parent_keys != node.parent_keys:
            parents_changed.append(ParentsChanged(node.key, before.parent_keys, node.parent_keys))
        if before.extra != node.extra:
            extra_changed.append(node.key)
    removed = [node.key for node in old.nodes if node.key not in new]
    return TaxonomyDiff(
        added=tuple(added),
        removed=tuple(removed),
        renamed=tuple(renamed),
        moved=tuple(moved),
        parents_changed=tuple(parents_changed),
        extra_changed=tuple(extra_changed),
    )
