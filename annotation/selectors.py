"""Reads that span relations: taxonomy lookups and the arrays the science cores consume."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotation.models import Annotation, AnnotationLabel, Clip, TaxonomyNode, TaxonomyVersion
from annotation.taxonomy_formats import split_path


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


def clip_label_matrix(
    *, clips: list[Clip], index: TaxonomyIndex, latest_only: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) int8 labels from each clip's latest annotation on ``index``'s version, and an (N,)
    mask of clips that have one."""
    pos = {c.id: i for i, c in enumerate(clips)}
    y = np.zeros((len(clips), len(index.nodes)), dtype=np.int8)
    has = np.zeros(len(clips), dtype=bool)
    anns = (
        # A reviewer's correction (kind "review") is the newest word on a clip, so it counts.
        Annotation.objects.filter(clip_id__in=pos.keys(), taxonomy_version=index.version)
        .order_by("clip_id", "-created_at", "-id")
        .values_list("id", "clip_id")
    )
    chosen: dict[int, int] = {}
    for ann_id, clip_id in anns:
        if latest_only and clip_id in chosen:
            continue
        chosen.setdefault(clip_id, ann_id)
    ann_to_row = {a: pos[c] for c, a in chosen.items()}
    for ann_id, node_id in AnnotationLabel.objects.filter(
        annotation_id__in=ann_to_row.keys()
    ).values_list("annotation_id", "node_id"):
        y[ann_to_row[ann_id], index.by_id[node_id].index] = 1
    for row in ann_to_row.values():
        has[row] = True
    return y, has
