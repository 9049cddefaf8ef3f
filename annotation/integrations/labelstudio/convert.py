"""Pure conversions between Refrain rows and Label Studio JSON/XML. No network, no queries.

Refrain → Label Studio: a taxonomy version becomes a labelling config with one ``<Taxonomy>`` of
nested ``<Choice>`` tags; each ``Choice`` carries the node's stable key as ``alias``, so results name
keys (which survive renames) while annotators see names. Clips become task dicts; per-clip
probabilities become predictions along their argmax path.

Label Studio → Refrain: a ``taxonomy`` result holds one list per selected item, root first. Each
list is mapped to a Refrain label string (a key when the list is made of aliases, an escaped path
when it is made of display names, as in a config a user wrote by hand), and the strings go through
:func:`annotation.services.annotations.labels_resolve`, which names every label not in the version.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from refrain.errors import Invalid
from taxonomy.formats import join_path

CONTROL_NAME = "genre"
OBJECT_NAME = "audio"
RESULT_TYPE = "taxonomy"

# XML 1.0 forbids these even when escaped; a name imported from a messy CSV may hold one.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class LabelStudioFormatError(Invalid, ValueError):
    """A Label Studio payload or result that does not have the shape Refrain expects."""


class NodeLike(Protocol):
    """What the conversions read from a taxonomy node (``TaxonomyNode`` rows fit)."""

    id: int
    key: str
    name: str
    parent_id: int | None
    index: int


def _xml_text(value: str) -> str:
    return _XML_INVALID.sub("", value)


def label_config_from_taxonomy(
    nodes: Sequence[NodeLike],
    *,
    control_name: str = CONTROL_NAME,
    object_name: str = OBJECT_NAME,
    leafs_only: bool = False,
) -> str:
    """A Label Studio labelling config for one taxonomy version.

    Multi-select is Label Studio's Taxonomy default (no ``maxUsages``). DAG sources keep only each
    node's primary parent: Label Studio's taxonomy is a tree. Attribute values are escaped by
    ElementTree, so names with ``&``, ``<`` or quotes give valid XML.
    """
    if not nodes:
        raise ValueError("the taxonomy version has no nodes")
    children: dict[int | None, list[NodeLike]] = {}
    for node in sorted(nodes, key=lambda n: n.index):
        children.setdefault(node.parent_id, []).append(node)
    known = {n.id for n in nodes}
    orphans = [
        n for pid, kids in children.items() if pid is not None and pid not in known for n in kids
    ]
    if orphans:
        raise ValueError(f"nodes whose parent is not in the version: {orphans[0].key!r}")

    view = ET.Element("View")
    ET.SubElement(view, "Audio", {"name": object_name, "value": f"${object_name}"})
    attrs = {"name": control_name, "toName": object_name, "showFullPath": "true"}
    if leafs_only:
        attrs["leafsOnly"] = "true"
    taxonomy = ET.SubElement(view, "Taxonomy", attrs)
    # Iterative, so a deep or wide (thousands of nodes) tree cannot hit the recursion limit.
    stack: list[tuple[ET.Element, NodeLike]] = [(taxonomy, n) for n in reversed(children[None])]
    while stack:
        parent_el, node = stack.pop()
        el = ET.SubElement(
            parent_el, "Choice", {"value": _xml_text(node.name), "alias": _xml_text(node.key)}
        )
        stack.extend((el, c) for c in reversed(children.get(node.id, [])))
    return ET.tostring(view, encoding="unicode")


def task_from_clip(clip: Any, *, audio_url: str, blind: bool = True) -> dict[str, Any]:
    """One Label Studio task for a clip; ``refrain_clip_id`` brings results back to the clip.

    In a blind project the task is named ``clip <id>``: Label Studio shows task data to its
    annotators, and file names often name the genre."""
    name = f"clip {clip.id}" if blind else clip.original_name or clip.external_id
    return {
        "data": {
            OBJECT_NAME: audio_url,
            "refrain_clip_id": clip.id,
            "refrain_name": name or f"clip {clip.id}",
        }
    }


def tasks_from_clips(
    clips: Iterable[Any], *, audio_url: Callable[[Any], str], blind: bool = True
) -> list[dict[str, Any]]:
    return [task_from_clip(c, audio_url=audio_url(c), blind=blind) for c in clips]


def _children_by_index(nodes: Sequence[NodeLike]) -> tuple[list[int], dict[int, list[int]]]:
    pos = {n.id: n.index for n in nodes}
    roots: list[int] = []
    children: dict[int, list[int]] = {}
    for n in sorted(nodes, key=lambda n: n.index):
        if n.parent_id is None:
            roots.append(n.index)
        else:
            children.setdefault(pos[n.parent_id], []).append(n.index)
    return roots, children


def argmax_path(
    probs: npt.NDArray[np.floating[Any]],
    *,
    roots: Sequence[int],
    children: Mapping[int, Sequence[int]],
    stop_below: float | None = None,
) -> list[int]:
    """Indices of the greedy root-to-leaf path through (K,) hierarchy-consistent probabilities.

    At each level the most probable child is taken; with ``stop_below`` the walk stops before a
    child whose probability is under it (the root is always taken).
    """
    path: list[int] = []
    options: Sequence[int] = roots
    while options:
        best = max(options, key=lambda i: probs[i])
        if path and stop_below is not None and probs[best] < stop_below:
            break
        path.append(best)
        options = children.get(best, ())
    return path


def prediction_from_probs(
    probs: npt.NDArray[np.floating[Any]],
    *,
    nodes: Sequence[NodeLike],
    model_version: str,
    control_name: str = CONTROL_NAME,
    object_name: str = OBJECT_NAME,
    stop_below: float | None = None,
    score: float | None = None,
) -> dict[str, Any]:
    """A Label Studio prediction (without ``task``) from one clip's (K,) probabilities.

    The result names the full path, root first, of node keys (the config's aliases). ``score`` is
    what Label Studio's uncertainty sampling sorts by, lowest first: given, it is used as is (the
    caller's order, e.g. Refrain's acquisition priority); otherwise it is the probability of the
    deepest node on the path, which for hierarchy-consistent probabilities is the smallest along it.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(nodes),):
        raise ValueError(f"expected ({len(nodes)},) probabilities, got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probabilities must be finite and in [0, 1]")
    roots, children = _children_by_index(nodes)
    by_index = {n.index: n for n in nodes}
    path = argmax_path(probs, roots=roots, children=children, stop_below=stop_below)
    score = float(probs[path[-1]]) if score is None else float(score)
    return {
        "model_version": model_version,
        "score": score if math.isfinite(score) else 0.0,
        "result": [
            {
                "from_name": control_name,
                "to_name": object_name,
                "type": RESULT_TYPE,
                "value": {RESULT_TYPE: [[by_index[i].key for i in path]]},
            }
        ],
    }


def taxonomy_paths_from_result(result: Any, *, control_name: str = CONTROL_NAME) -> list[list[str]]:
    """The selected paths (root first) of the ``control_name`` taxonomy in an annotation result."""
    if not isinstance(result, list):
        raise LabelStudioFormatError("annotation 'result' must be a list")
    paths: list[list[str]] = []
    for item in result:
        if not isinstance(item, dict) or item.get("from_name") != control_name:
            continue
        value = item.get("value")
        chosen = value.get(RESULT_TYPE) if isinstance(value, dict) else None
        if not isinstance(chosen, list):
            raise LabelStudioFormatError(
                f"result for {control_name!r} has no value.{RESULT_TYPE} list"
            )
        for path in chosen:
            if (
                not isinstance(path, list)
                or not path
                or not all(isinstance(p, str) and p for p in path)
            ):
                raise LabelStudioFormatError(
                    f"each {RESULT_TYPE} item must be a non-empty list of strings, got {path!r}"
                )
            paths.append(path)
    return paths


def labels_from_taxonomy_paths(
    paths: Iterable[Sequence[str]], *, known_keys: Container[str]
) -> list[str]:
    """Refrain label strings for Label Studio taxonomy paths, for ``labels_resolve``.

    A path made only of known keys came from the aliases of a Refrain-generated config: its last
    key is the label. Any other path is a list of display names, joined (escaped) into a full path;
    ``labels_resolve`` then reports it by that spelling if it is not in the version.
    """
    labels: list[str] = []
    for path in paths:
        if all(p in known_keys for p in path):
            label = path[-1]
        else:
            label = join_path(p.strip() for p in path)
        if label not in labels:
            labels.append(label)
    return labels
