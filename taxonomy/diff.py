"""What changed between two versions of one taxonomy, matching nodes by key."""

from __future__ import annotations

from dataclasses import dataclass

from taxonomy.formats.parsed import ParsedTaxonomy


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
