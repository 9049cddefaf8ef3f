"""Reads that span relations: taxonomy lookups and the arrays the science cores consume."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from annotation.models import Annotation, Clip, TaxonomyNode, TaxonomyVersion
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
class LatestAnnotation:
    annotation_id: int
    taxonomy_version_id: int
    kind: str


def latest_annotations(
    *,
    project_id: int,
    clip_ids: list[int] | None = None,
    taxonomy_version_id: int | None = None,
    ready_only: bool = False,
) -> dict[int, LatestAnnotation]:
    """Each clip's newest annotation (a reviewer's correction included), by clip id.

    On PostgreSQL the database picks the newest row per clip (``DISTINCT ON``), so only one row per
    clip crosses the wire; elsewhere the rows arrive newest first and the first one per clip wins.
    """
    qs = Annotation.objects.filter(clip__project_id=project_id)
    if taxonomy_version_id is not None:
        qs = qs.filter(taxonomy_version_id=taxonomy_version_id)
    if clip_ids is not None:
        qs = qs.filter(clip_id__in=clip_ids)
    if ready_only:
        qs = qs.filter(clip__status=Clip.Status.READY)
    qs = qs.order_by("clip_id", "-created_at", "-id")
    if connection.vendor == "postgresql":
        qs = qs.distinct("clip_id")
    out: dict[int, LatestAnnotation] = {}
    for clip_id, ann_id, version_id, kind in qs.values_list(
        "clip_id", "id", "taxonomy_version_id", "kind"
    ).iterator(chunk_size=10_000):
        if clip_id not in out:
            out[clip_id] = LatestAnnotation(ann_id, version_id, kind)
    return out
