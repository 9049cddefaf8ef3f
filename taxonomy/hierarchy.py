"""Array view of a taxonomy: the conventions every ``core`` module shares.

Glossary
--------
N clips, K taxonomy nodes, M annotators, D feature dimensions.

``parents`` : (K,) int64
    Index of each node's parent, ``-1`` for roots. Nodes may come in any order; a flat label set is
    K roots. Where the source taxonomy is a DAG (AudioSet), arrays use each node's *primary* parent.
``labels`` : (N, K) {0, 1}
    Ancestor-closed: if a node is on, so is its parent.
``pred_probs`` : (N, K) float
    Hierarchy-consistent: a child's probability never exceeds its parent's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_F = TypeVar("_F", bound=np.floating[Any])


class HierarchyError(ValueError):
    """The ``parents`` array does not describe a forest (cycle, bad index)."""


def as_hierarchy(parents: npt.ArrayLike | Hierarchy) -> Hierarchy:
    """``parents`` itself if it is a :class:`Hierarchy`, else a validated one built from it.

    Every public ``core`` function takes ``parents`` as either; this is the one place that turns
    the array form into the object.
    """
    return parents if isinstance(parents, Hierarchy) else Hierarchy(np.asarray(parents))


def validate_parents(parents: npt.ArrayLike) -> IntArray:
    """Return ``parents`` as int64 after checking it describes a forest.

    Raises
    ------
    HierarchyError
        If an index is out of range, a node is its own parent, or there is a cycle.
    """
    p = np.asarray(parents, dtype=np.int64)
    if p.ndim != 1:
        raise HierarchyError(f"parents must be 1-d, got shape {p.shape}")
    k = p.shape[0]
    bad = np.flatnonzero((p < -1) | (p >= k))
    if bad.size:
        raise HierarchyError(f"node {bad[0]} has parent index {p[bad[0]]} outside [-1, {k})")
    if np.any(p == np.arange(k)):
        raise HierarchyError(f"node {int(np.flatnonzero(p == np.arange(k))[0])} is its own parent")
    _topological_order(p)  # raises on cycles
    return p


def _topological_order(parents: IntArray) -> IntArray:
    k = parents.shape[0]
    depth = np.full(k, -1, dtype=np.int64)
    depth[parents == -1] = 0
    # Each pass resolves one more level; K passes without progress means a cycle.
    for _ in range(k + 1):
        unresolved = depth < 0
        if not unresolved.any():
            break
        parent_depth = depth[parents[unresolved]]
        ready = parent_depth >= 0
        if not ready.any():
            node = int(np.flatnonzero(unresolved)[0])
            raise HierarchyError(f"cycle through node {node}")
        idx = np.flatnonzero(unresolved)[ready]
        depth[idx] = parent_depth[ready] + 1
    return np.argsort(depth, kind="stable")


@dataclass(frozen=True)
class Hierarchy:
    """A validated forest over K nodes with cached derived arrays.

    Parameters
    ----------
    parents : (K,) array-like of int
        Parent index per node, -1 for roots.
    names : sequence of str, optional
        Display name (or full path) per node, for messages and reports.
    """

    parents: IntArray
    names: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parents", validate_parents(self.parents))
        if self.names is not None:
            if len(self.names) != self.parents.shape[0]:
                raise HierarchyError("names and parents differ in length")
            object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def from_paths(cls, paths: Sequence[str], *, sep: str = "/") -> Hierarchy:
        """Build from full paths such as ``"Rock/Punk"``; missing ancestors are created."""
        index: dict[str, int] = {}
        parents: list[int] = []
        names: list[str] = []
        for path in paths:
            parts = [p.strip() for p in path.split(sep)]
            for depth in range(1, len(parts) + 1):
                prefix = sep.join(parts[:depth])
                if prefix not in index:
                    index[prefix] = len(parents)
                    parents.append(index[sep.join(parts[: depth - 1])] if depth > 1 else -1)
                    names.append(prefix)
        return cls(np.asarray(parents, dtype=np.int64), tuple(names))

    @property
    def n_nodes(self) -> int:
        return int(self.parents.shape[0])

    @cached_property
    def order(self) -> IntArray:
        """(K,) node indices sorted so that every parent comes before its children."""
        return _topological_order(self.parents)

    @cached_property
    def depth(self) -> IntArray:
        """(K,) depth of each node; roots have depth 0."""
        d = np.zeros(self.n_nodes, dtype=np.int64)
        for node in self.order:
            par = self.parents[node]
            d[node] = 0 if par < 0 else d[par] + 1
        return d

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.n_nodes else 0

    @cached_property
    def children(self) -> tuple[IntArray, ...]:
        """Children of each node, as index arrays."""
        kids: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for node, par in enumerate(self.parents.tolist()):
            if par >= 0:
                kids[par].append(node)
        return tuple(np.asarray(k, dtype=np.int64) for k in kids)

    @cached_property
    def roots(self) -> IntArray:
        return np.flatnonzero(self.parents == -1).astype(np.int64)

    @cached_property
    def is_leaf(self) -> BoolArray:
        has_child = np.zeros(self.n_nodes, dtype=bool)
        has_child[self.parents[self.parents >= 0]] = True
        return ~has_child

    @cached_property
    def ancestor_matrix(self) -> BoolArray:
        """(K, K) bool; ``A[i, j]`` is True when j is i or an ancestor of i."""
        a = np.eye(self.n_nodes, dtype=bool)
        for node in self.order:
            par = self.parents[node]
            if par >= 0:
                a[node] |= a[par]
        return a

    @cached_property
    def top_level(self) -> IntArray:
        """(K,) index of each node's root ancestor."""
        top = np.arange(self.n_nodes, dtype=np.int64)
        for node in self.order:
            par = self.parents[node]
            if par >= 0:
                top[node] = top[par]
        return top

    def ancestor_close(self, labels: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """(N, K) labels with every ancestor of a positive node turned on."""
        y = np.asarray(labels) > 0
        out = y.copy()
        # Walk deepest first so that a node's newly set parent propagates further up.
        for node in self.order[::-1]:
            par = self.parents[node]
            if par >= 0:
                out[:, par] |= out[:, node]
        return out.astype(np.int8)

    def not_ancestor_closed(self, labels: npt.ArrayLike) -> BoolArray:
        """(N,) True for rows where some positive node has a negative parent."""
        y = np.asarray(labels) > 0
        has_parent = self.parents >= 0
        child_on = y[:, has_parent]
        parent_on = y[:, self.parents[has_parent]]
        out: BoolArray = np.any(child_on & ~parent_on, axis=1)
        return out

    def make_consistent(self, pred_probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, K) probabilities clipped so a child never exceeds its parent (top-down min)."""
        p = np.array(pred_probs, dtype=np.float64, copy=True)
        for node in self.order:
            par = self.parents[node]
            if par >= 0:
                np.minimum(p[:, node], p[:, par], out=p[:, node])
        return p

    def decision_probabilities(
        self,
        pred_probs: npt.ArrayLike,
        *,
        dtype: type[np.floating[Any]] = np.float64,
        eps: float = 1e-12,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """(N, K) conditional ``q = P(node | parent)`` and (N, K) reach ``w = P(parent)``.

        Roots keep their marginal as ``q`` and have ``w = 1``; both are clipped to [0, 1]. One
        column gather (``np.take``) and in-place division and clipping, in ``dtype``
        (``np.float32`` halves the memory traffic where scores only rank clips).
        """
        p = np.asarray(pred_probs, dtype=dtype)
        has_parent = self.parents >= 0
        w = np.take(p, np.where(has_parent, self.parents, 0), axis=1)
        w[:, ~has_parent] = 1.0
        q = np.maximum(w, eps)
        np.divide(p, q, out=q)  # a root divides by 1.0: its marginal, exactly
        np.clip(q, 0.0, 1.0, out=q)
        np.clip(w, 0.0, 1.0, out=w)
        return q, w

    def conditional(
        self, pred_probs: npt.ArrayLike, *, eps: float = 1e-12
    ) -> npt.NDArray[np.float64]:
        """(N, K) probability of each node given its parent; roots keep their marginal."""
        q: npt.NDArray[np.float64] = self.decision_probabilities(pred_probs, eps=eps)[0]
        return q

    def marginal(self, conditional: npt.NDArray[_F]) -> npt.NDArray[_F]:
        """(N, K) marginals from conditionals ``P(node | parent)``: the product down each path.

        The inverse of :meth:`conditional` (roots keep their value); a new array of the input's
        dtype.
        """
        out = np.empty_like(conditional)
        for node in self.order:
            par = self.parents[node]
            out[:, node] = conditional[:, node] if par < 0 else conditional[:, node] * out[:, par]
        return out
