"""Typed label noise and synthetic model probabilities over a taxonomy, for tests and benchmarks.

Glossary as in :mod:`quality.core.label_issues`: N clips, K nodes, ``labels`` (N, K) ancestor-closed,
``pred_probs`` (N, K) hierarchy-consistent, ``parents`` (K,) with -1 for roots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from taxonomy.hierarchy import Hierarchy, as_hierarchy

__all__ = ["NOISE_TYPES", "inject_label_noise", "random_paths", "simulate_pred_probs"]

NOISE_TYPES: tuple[str, ...] = ("wrong_sibling", "wrong_branch", "missing_genre", "extra_genre")


def _descend(h: Hierarchy, start: int, depth_left: int, rng: np.random.Generator) -> list[int]:
    """``start`` plus a random path below it, at most ``depth_left`` further levels."""
    path = [start]
    node = start
    for _ in range(depth_left):
        kids = h.children[node]
        if kids.size == 0:
            break
        node = int(rng.choice(kids))
        path.append(node)
    return path


def random_paths(
    n: int,
    *,
    parents: npt.ArrayLike | Hierarchy,
    seed: int | np.random.Generator = 0,
    multi_label_rate: float = 0.3,
    stop_rate: float = 0.0,
) -> npt.NDArray[np.int8]:
    """(n, K) ancestor-closed labels: one random root-to-node path per clip, two on some clips.

    Parameters
    ----------
    multi_label_rate : float
        Fraction of clips that get a second path under a different root.
    stop_rate : float
        Probability of stopping at each inner node instead of descending (0 = always to a leaf).
    """
    h = as_hierarchy(parents)
    rng = np.random.default_rng(seed)
    y = np.zeros((n, h.n_nodes), dtype=np.int8)
    roots = h.roots
    for i in range(n):
        n_paths = 2 if (rng.random() < multi_label_rate and roots.size > 1) else 1
        for r in rng.choice(roots, size=n_paths, replace=False):
            node = int(r)
            y[i, node] = 1
            while h.children[node].size and rng.random() >= stop_rate:
                node = int(rng.choice(h.children[node]))
                y[i, node] = 1
    return y


def _leaves_of_row(h: Hierarchy, row: npt.NDArray[np.bool_]) -> list[int]:
    on = np.flatnonzero(row)
    has_on_child = np.zeros(h.n_nodes, dtype=bool)
    par = h.parents[on]
    has_on_child[par[par >= 0]] = True
    return [int(v) for v in on if not has_on_child[v]]


def _branch_of_leaf(h: Hierarchy, row: npt.NDArray[np.bool_], leaf: int) -> int:
    """Highest ancestor-or-self of ``leaf`` whose labelled subtree holds only this path."""
    node = leaf
    while h.parents[node] >= 0:
        par = int(h.parents[node])
        kids_on = [int(c) for c in h.children[par] if row[c]]
        if len(kids_on) > 1:
            break
        node = par
    return node


def _subtree_depth(h: Hierarchy, row: npt.NDArray[np.bool_], node: int) -> int:
    desc = h.ancestor_matrix[:, node] & row
    return int(h.depth[desc].max() - h.depth[node])


def _apply(
    kind: str, row: npt.NDArray[np.bool_], h: Hierarchy, rng: np.random.Generator
) -> npt.NDArray[np.bool_] | None:
    """Noisy copy of ``row`` with one error of ``kind``, or None when the row is not eligible."""
    new = row.copy()
    desc = h.ancestor_matrix.T
    if kind == "wrong_sibling":
        cands = [
            v
            for v in np.flatnonzero(row)
            if h.parents[v] >= 0 and any(not row[s] for s in h.children[h.parents[v]] if s != v)
        ]
        if not cands:
            return None
        v = int(rng.choice(cands))
        sibs = [int(s) for s in h.children[h.parents[v]] if s != v and not row[s]]
        depth_left = _subtree_depth(h, row, v)
        new &= ~desc[v]
        new[_descend(h, int(rng.choice(sibs)), depth_left, rng)] = True
        return new
    if kind == "wrong_branch":
        on_roots = [int(r) for r in h.roots if row[r]]
        off_roots = [int(r) for r in h.roots if not row[r]]
        if not on_roots or not off_roots:
            return None
        r = int(rng.choice(on_roots))
        depth_left = _subtree_depth(h, row, r)
        new &= ~desc[r]
        new[_descend(h, int(rng.choice(off_roots)), depth_left, rng)] = True
        return new
    if kind == "missing_genre":
        leaves = _leaves_of_row(h, row)
        if len(leaves) < 2:
            return None
        leaf = int(rng.choice(leaves))
        new &= ~desc[_branch_of_leaf(h, row, leaf)]
        return new
    if kind == "extra_genre":
        off_roots = [int(r) for r in h.roots if not row[r]]
        if not off_roots:
            return None
        new[_descend(h, int(rng.choice(off_roots)), h.max_depth, rng)] = True
        return new
    raise ValueError(f"unknown noise type {kind!r}; use one of {NOISE_TYPES}")


def inject_label_noise(
    labels: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    noise_rate: float = 0.1,
    types: Sequence[str] = NOISE_TYPES,
    seed: int | np.random.Generator = 0,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.str_]]:
    """Plant one typed error in a random ``noise_rate`` fraction of clips.

    Parameters
    ----------
    labels : (N, K) {0, 1}
        True, ancestor-closed labels.
    parents : (K,) int or Hierarchy
    noise_rate : float
        Fraction of clips that get an error.
    types : sequence of str
        Noise types to draw from (uniformly, among those the clip is eligible for):
        ``wrong_sibling`` replaces a labelled non-root node's subtree with a random path under an
        unlabelled sibling; ``wrong_branch`` replaces a labelled root's subtree with a random path of
        the same depth under an unlabelled root; ``missing_genre`` removes one of two or more
        labelled paths; ``extra_genre`` adds a random root-to-leaf path under an unlabelled root.
    seed : int or Generator

    Returns
    -------
    noisy : (N, K) int8
        Labels with the planted errors, still ancestor-closed.
    noise_type : (N,) str
        The planted type per clip, ``""`` where the clip is clean.
    """
    h = as_hierarchy(parents)
    rng = np.random.default_rng(seed)
    y = np.asarray(labels) > 0
    n = y.shape[0]
    noisy = y.copy()
    kinds = np.full(n, "", dtype="<U13")
    for i in rng.choice(n, size=round(noise_rate * n), replace=False):
        order = list(rng.permutation(list(types)))
        for kind in order:
            new = _apply(str(kind), y[i], h, rng)
            if new is not None and not np.array_equal(new, y[i]):
                noisy[i] = new
                kinds[i] = kind
                break
    return noisy.astype(np.int8), kinds


def simulate_pred_probs(
    labels: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    seed: int | np.random.Generator = 0,
    root_signal: float = 3.0,
    child_signal: float = 2.0,
    noise: float = 1.5,
    clip_difficulty: float = 1.0,
) -> npt.NDArray[np.float64]:
    """Realistic out-of-sample probabilities for *true* ``labels``: (N, K), hierarchy-consistent.

    Each decision's conditional logit is ``±signal · c_n + noise · ε`` (sign from the true label,
    ``c_n`` a per-clip easiness drawn log-normally with spread ``clip_difficulty``); sibling
    conditionals are normalised as a softmax when the true label has one child on, so the model
    confuses siblings rather than switching them all on. Marginals are products of conditionals
    down the tree, hence consistent. Roots are independent (multi-label at the top level).
    """
    h = as_hierarchy(parents)
    rng = np.random.default_rng(seed)
    y = np.asarray(labels) > 0
    n, k = y.shape
    easy = np.exp(clip_difficulty * 0.5 * rng.standard_normal(n))[:, None]
    sign = np.where(y, 1.0, -1.0)
    signal = np.where(h.depth == 0, root_signal, child_signal)[None, :]
    logit = sign * signal * easy + noise * rng.standard_normal((n, k))
    cond = 1.0 / (1.0 + np.exp(-logit))
    # Among siblings, renormalise with a softmax so the mass is shared (one child is usually right).
    for par in range(k):
        kids = h.children[par]
        if kids.size > 1:
            z = logit[:, kids]
            z = z - z.max(axis=1, keepdims=True)
            soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            # mix: mostly the softmax share, with the independent sigmoid for multi-child rows
            n_on = y[:, kids].sum(axis=1, keepdims=True)
            cond[:, kids] = np.where(n_on > 1, cond[:, kids], 0.85 * soft + 0.15 * cond[:, kids])
    p = h.marginal(cond)
    return np.asarray(p, dtype=np.float64)
