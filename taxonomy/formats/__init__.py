"""Parse taxonomy files into plain dataclasses (:func:`parse_taxonomy`); :mod:`taxonomy.diff`
compares two versions.

Pure Python (standard library, plus PyYAML for ``yaml-tree`` when it is importable): no Django import.
The ``import_taxonomy`` service (``annotation.services.taxonomies``) stores a :class:`ParsedTaxonomy`
as a versioned Taxonomy with its TaxonomyNode rows, and uses :func:`taxonomy.diff.diff_taxonomies`
to say what changed since the last version.

One module per format family (``fma``, ``audioset``, ``discogs``, ``path_lists``, ``nested_json``,
``yaml_tree``), each a ``parse_*(text, doc)`` function registered in :mod:`taxonomy.formats.parse`;
they collect nodes through :class:`taxonomy.formats.parsed.Collector`, which validates them.
Detection is :mod:`taxonomy.formats.sniff`; JSON is read by :mod:`taxonomy.formats.jsondoc`, which
keeps each object's line for error messages. To add a format: a module with its parser, an entry in
``PARSERS``, and a rule in ``sniff``.

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

from taxonomy.formats.base import (
    MAX_DEPTH,
    MAX_INPUT_CHARS,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_NODES,
    TaxonomyFormatError,
)
from taxonomy.formats.parse import FORMATS, parse_taxonomy
from taxonomy.formats.parsed import ParsedNode, ParsedTaxonomy
from taxonomy.formats.pathnames import escape_name, join_path, split_path
from taxonomy.formats.sniff import detect_format

__all__ = [
    "FORMATS",
    "MAX_DEPTH",
    "MAX_INPUT_CHARS",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_NODES",
    "ParsedNode",
    "ParsedTaxonomy",
    "TaxonomyFormatError",
    "detect_format",
    "escape_name",
    "join_path",
    "parse_taxonomy",
    "split_path",
]
