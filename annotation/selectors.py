"""Reads that span relations: taxonomy lookups and the arrays the science cores consume."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from annotation.models import (
    Annotation,
    AnnotationLabel,
    Clip,
    Project,
    TaxonomyNode,
    TaxonomyVersion,
)
from taxonomy.formats import split_path


@dataclass
class TaxonomyIndex:
    """One taxonomy version held in memory: lookups by key or path, ancestor closure, arrays.

    Built once per request or import (a few ms for 500 nodes) instead of one query per label.
    """

    version: TaxonomyVersion
    nodes: list[TaxonomyNode]
    by_id: dict[int, TaxonomyNode] = field(init=False)
    by_key: dict[str, TaxonomyNode] = field(init=False)
    by_path: dict[str, TaxonomyNode] = field(init=False)
    ancestors: dict[int, tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {n.id: n for n in self.nodes}
        self.by_key = {n.key: n for n in self.nodes}
        self.by_path = {n.path.casefold(): n for n in self.nodes}
        # Names may contain "/" (FMA's "Big Band/Swing"): stored paths escape it as "\\/". Accept
        # the unescaped spelling too where it is unambiguous.
        plain: dict[str, list[TaxonomyNode]] = {}
        for n in self.nodes:
            if "\\" in n.path:
                plain.setdefault("/".join(split_path(n.path)).casefold(), []).append(n)
        for p, found in plain.items():
            if len(found) == 1 and p not in self.by_path:
                self.by_path[p] = found[0]
        extra: dict[int, list[int]] = {}
        through = TaxonomyNode.extra_parents.through
        for from_id, to_id in through.objects.filter(
            from_taxonomynode__version=self.version
        ).values_list("from_taxonomynode_id", "to_taxonomynode_id"):
            extra.setdefault(from_id, []).append(to_id)
        # Nodes come ordered by index and the importer numbers parents first, so one pass closes.
        anc: dict[int, tuple[int, ...]] = {}
        for n in sorted(self.nodes, key=lambda n: n.depth):
            parent_ids = ([n.parent_id] if n.parent_id else []) + extra.get(n.id, [])
            acc: list[int] = []
            for pid in parent_ids:
                for a in (*anc.get(pid, ()), pid):
                    if a not in acc:
                        acc.append(a)
            anc[n.id] = tuple(acc)
        self.ancestors = anc

    @classmethod
    def for_version(cls, version: TaxonomyVersion) -> TaxonomyIndex:
        return cls(version, list(version.nodes.order_by("index")))

    def lookup(self, label: str) -> TaxonomyNode | None:
        """A node by key, or by full path (case-insensitive; `` / `` and ``/`` both accepted)."""
        label = label.strip()
        if label in self.by_key:
            return self.by_key[label]
        norm = "/".join(part.strip() for part in label.split("/")).casefold()
        return self.by_path.get(norm)

    def closure(self, node_ids: list[int]) -> list[int]:
        """The node ids plus all their ancestors, in index order."""
        out: set[int] = set()
        for nid in node_ids:
            out.add(nid)
            out.update(self.ancestors[nid])
        return sorted(out, key=lambda i: self.by_id[i].index)

    @property
    def parents_array(self) -> np.ndarray:
        """(K,) primary-parent index per node, -1 for roots (the ``core`` convention)."""
        return np.array(
            [self.by_id[n.parent_id].index if n.parent_id else -1 for n in self.nodes],
            dtype=np.int64,
        )

    @property
    def paths(self) -> list[str]:
        return [n.path for n in self.nodes]


_INDEX_CACHE: OrderedDict[tuple[int, str, str], TaxonomyIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_INDEX_CACHE_SIZE = 16


def taxonomy_index_cached(version: TaxonomyVersion) -> TaxonomyIndex:
    """The :class:`TaxonomyIndex` of a version, built once per process (versions never change).

    The key includes the creation time and digest so a reused primary key (SQLite after a
    rollback) never serves another version's nodes.
    """
    key = (version.pk, version.created_at.isoformat(), version.content_sha256)
    with _INDEX_LOCK:
        index = _INDEX_CACHE.get(key)
        if index is not None:
            _INDEX_CACHE.move_to_end(key)
            return index
    index = TaxonomyIndex.for_version(version)
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


@dataclass(frozen=True)
class _Newest:
    annotation_id: int
    taxonomy_version_id: int
    kind: str
    consensus_annotation_id: int | None


def _newest_annotations(
    *, project_id: int, clip_ids: list[int] | None, ready_only: bool
) -> dict[int, _Newest]:
    """Each clip's newest annotation (a reviewer's correction included), by clip id.

    On PostgreSQL the database picks the newest row per clip (``DISTINCT ON``), so only one row per
    clip crosses the wire; elsewhere the rows arrive newest first and the first one per clip wins.
    """
    qs = Annotation.objects.filter(clip__project_id=project_id)
    if clip_ids is not None:
        qs = qs.filter(clip_id__in=clip_ids)
    if ready_only:
        qs = qs.filter(clip__status=Clip.Status.READY)
    qs = qs.order_by("clip_id", "-created_at", "-id")
    if connection.vendor == "postgresql":
        qs = qs.distinct("clip_id")
    out: dict[int, _Newest] = {}
    for clip_id, ann_id, version_id, kind, pinned in qs.values_list(
        "clip_id", "id", "taxonomy_version_id", "kind", "clip__consensus_annotation_id"
    ).iterator(chunk_size=10_000):
        if clip_id not in out:
            out[clip_id] = _Newest(ann_id, version_id, kind, pinned)
    return out


@dataclass(frozen=True)
class CurrentLabels:
    """The label that stands for each labelled clip, in clip-id order.

    ``annotation_ids[i]`` gave clip ``clip_ids[i]`` its label; ``node_ids[i]`` are that
    annotation's stored nodes (ancestor-closed as stored, in stored order) and ``explicit[i]`` the
    ones the annotator chose; ``kinds[i]`` is the annotation's kind (``review`` for a reviewer's correction);
    ``foreign[i]`` is True when the annotation or any of its nodes belongs to another taxonomy
    version than the project's, which every reader that maps labels onto the taxonomy skips.
    """

    clip_ids: list[int]
    annotation_ids: list[int]
    node_ids: list[list[int]]
    explicit: list[list[int]]
    kinds: list[str]
    foreign: list[bool]

    def of_clip(self, clip_id: int) -> int | None:
        """The row of ``clip_id``, or None when it has no label."""
        try:
            return self.clip_ids.index(clip_id)
        except ValueError:
            return None


def current_labels(
    *, project: Project, clip_ids: list[int] | None = None, ready_only: bool = True
) -> CurrentLabels:
    """The one answer to "which label stands for this clip": training, detection, consensus, the
    export, the pages, the API and Label Studio all read it here (2 queries).

    The rule, in order:

    1. a reviewer's correction, while it is the clip's newest annotation (a reviewer adjudicates);
    2. where several people labelled the clip, the newest annotation whose label set equals their
       consensus (``Clip.consensus_annotation``, kept by the quality layer's consensus service), so
       a second opinion the relabel round rejected is not taken for the label because it is newest;
    3. otherwise the clip's newest annotation.
    """
    version_id = project.taxonomy_version_id
    newest = _newest_annotations(project_id=project.pk, clip_ids=clip_ids, ready_only=ready_only)
    chosen: dict[int, int] = {}
    for clip_id, n in newest.items():
        if n.kind != Annotation.Kind.REVIEW and n.consensus_annotation_id is not None:
            chosen[clip_id] = n.consensus_annotation_id
        else:
            chosen[clip_id] = n.annotation_id
    nodes: dict[int, list[tuple[int, bool, int]]] = {a: [] for a in chosen.values()}
    kind_version: dict[int, tuple[str, int]] = {}
    ann_ids = list(nodes)
    for start in range(0, len(ann_ids), 20_000):
        part = ann_ids[start : start + 20_000]
        for ann_id, node_id, explicit, node_version, kind, ann_version in (
            AnnotationLabel.objects.filter(annotation_id__in=part)
            .order_by("annotation_id", "id")
            .values_list(
                "annotation_id",
                "node_id",
                "explicit",
                "node__version_id",
                "annotation__kind",
                "annotation__taxonomy_version_id",
            )
        ):
            nodes[ann_id].append((node_id, explicit, node_version))
            kind_version[ann_id] = (kind, ann_version)
    clips = sorted(c for c in chosen if nodes[chosen[c]])
    out = CurrentLabels([], [], [], [], [], [])
    for clip_id in clips:
        ann_id = chosen[clip_id]
        rows = nodes[ann_id]
        kind, ann_version = kind_version[ann_id]
        out.clip_ids.append(clip_id)
        out.annotation_ids.append(ann_id)
        out.node_ids.append([n for n, _, _ in rows])
        out.explicit.append([n for n, e, _ in rows if e])
        out.kinds.append(kind)
        out.foreign.append(ann_version != version_id or any(v != version_id for _, _, v in rows))
    return out
