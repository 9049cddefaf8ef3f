"""Hierarchy-aware label-issue detection for multi-label clips over a taxonomy tree.

The detector scores every **parent -> child decision** an annotator made rather than flat per-node
probabilities: wherever a node's parent is labelled positive (or the node is a root), the label says
"this child is on" or "this child is off", and the model's out-of-sample probability of *that decision
given the parent*, ``P(child | parent)`` (:meth:`Hierarchy.conditional`), scores it. Decisions below an
unlabelled parent were never made and are not scored. Per-decision scores are pooled per clip with the
exponential moving average of the worst decisions that cleanlab's multi-label scorer uses, so a clip
with several doubtful decisions ranks before one with a single doubtful decision. With a flat label set
(K roots) every decision is active and the conditional is the marginal, so ``method="self_confidence"``
reduces to cleanlab's ``multilabel_classification.get_label_quality_scores`` (self-confidence, EMA
``alpha=0.8``).

The default ``method="calibrated"`` makes decisions at different nodes comparable before pooling
them: per node, a two-parameter logistic (Platt) calibration of ``logit P(child | parent)`` is fitted
to the decisions the labels made there (label noise is a minority, so this mostly learns how far the
model's confidence at that node can be trusted), and each decision's calibrated self-confidence is
divided by its per-node confident-learning threshold (the mean calibrated self-confidence of the same
decision at the same node), capped at 1. A decision is then suspect in proportion to how unusual it
is *for that node*: the base rates of the node and the model's skill there cancel out. The pooled
score is an EMA with ``alpha=0.99``: the worst decision decides, further failed decisions break ties.
On the corpus benchmark (``bench/quality_detection.py``) this ranks planted errors with 1.26x (log-mel
features) to 1.36x (log-mel + musicnn) cleanlab's average precision on the same probabilities, where
the raw conditional self-confidence gave 0.85-0.89x.

Cost: after a few dense passes over the (N, K) inputs to validate them (``np.take`` gathers of the
parent columns), only the decisions actually made are scored, in sparse row-major form (a root, or a
child of a labelled node: typically 10-20 % of N * K); the calibration is fitted on at most 20,000
rows; pooling works on a compact (N, max decisions per clip) matrix. N = 100,000, K = 163, float32:
about 0.4 s of CPU for scores and ranking (``bench/quality_speed.py``). Keep ``pred_probs`` float32
(float64 is accepted and kept, at about 1.3x the cost).

Glossary
--------
N clips, K taxonomy nodes.

``labels`` : (N, K) {0, 1}
    Given labels, ancestor-closed (a positive node's parent is positive).
``pred_probs`` : (N, K) float in [0, 1]
    Out-of-sample (cross-validated) model probabilities, hierarchy-consistent (a child's probability
    never exceeds its parent's; see :meth:`Hierarchy.make_consistent`).
``parents`` : (K,) int
    Index of each node's parent, ``-1`` for roots.
decision (n, k)
    Whether clip n has node k, asked only where k's parent is positive in ``labels[n]`` (or k is a
    root). Its *self-confidence* is ``P(k | parent)`` if the label says on and ``1 - P(k | parent)``
    if it says off.
issue types
    ``wrong_sibling``: right parent, wrong child. ``wrong_branch``: wrong top level.
    ``missing_genre``: a genre (path) the clip has is not labelled. ``extra_genre``: a labelled genre
    (path) the clip does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from taxonomy.hierarchy import Hierarchy, as_hierarchy
from taxonomy.paths import most_probable_descent
from taxonomy.pooling import ema_terms, worst_decision_ema

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Method = Literal["calibrated", "self_confidence", "normalized"]
Pooling = Literal["ema", "softmin", "min"]

ISSUE_TYPES: tuple[str, ...] = ("wrong_sibling", "wrong_branch", "missing_genre", "extra_genre")

#: Tolerance for the hierarchy-consistency check of ``pred_probs``.
CONSISTENCY_TOL = 1e-6
#: EMA forgetting factor per method when ``alpha`` is not given: cleanlab's 0.8 for the methods that
#: reproduce its scores; 0.99 for ``"calibrated"``, whose decision scores are comparable across nodes,
#: so the worst decision decides and further failed decisions only break ties.
DEFAULT_ALPHA: dict[str, float] = {"calibrated": 0.99, "self_confidence": 0.8, "normalized": 0.8}
#: Rows used to fit the per-node calibration (evenly spaced; all rows when N is smaller).
CALIBRATION_MAX_ROWS = 20_000
#: Ridge pulling each node's calibration toward the identity (slope 1, intercept 0), in units of
#: decisions: it keeps nodes with few or one-sided decisions close to the raw probabilities.
CALIBRATION_RIDGE = 1.0
_CALIBRATION_ITERS = 25
_LOGIT_EPS = 1e-6
_BLOCK_ROWS = 8192

__all__ = [
    "ISSUE_TYPES",
    "LabelIssues",
    "LabelStructureReport",
    "check_label_structure",
    "decision_scores",
    "find_label_issues",
    "label_quality_scores",
    "labels_to_dense",
]


# --------------------------------------------------------------------------------------------------
# Structural check (no model needed)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelStructureReport:
    """Rows whose labels are structurally invalid, found without any model.

    Attributes
    ----------
    out_of_range : (N,) bool
        The row names a node index outside ``[0, K)`` (only possible in list form).
    invalid_value : (N,) bool
        The row holds a value other than 0/1 (dense form), including NaN.
    not_ancestor_closed : (N,) bool
        Some positive node has a negative parent.
    missing_ancestors : tuple of (n_missing,) int64 arrays, one per row
        The ancestors that closing the row would add (empty where the row is closed or invalid).
    """

    out_of_range: BoolArray
    invalid_value: BoolArray
    not_ancestor_closed: BoolArray
    missing_ancestors: tuple[IntArray, ...]

    @property
    def bad_rows(self) -> IntArray:
        """(n_bad,) indices of rows with any structural problem."""
        bad = self.out_of_range | self.invalid_value | self.not_ancestor_closed
        return np.flatnonzero(bad).astype(np.int64)

    @property
    def ok(self) -> bool:
        return self.bad_rows.size == 0


def labels_to_dense(
    labels: Sequence[Sequence[int]], *, n_nodes: int
) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """List form (node indices per clip) -> (N, K) int8, plus an (N,) mask of out-of-range rows.

    Out-of-range indices are dropped from the dense row and reported in the mask.
    """
    n = len(labels)
    dense = np.zeros((n, n_nodes), dtype=np.int8)
    bad = np.zeros(n, dtype=bool)
    for i, row in enumerate(labels):
        idx = np.asarray(list(row), dtype=np.int64).reshape(-1)
        ok = (idx >= 0) & (idx < n_nodes)
        bad[i] = not bool(ok.all())
        dense[i, idx[ok]] = 1
    return dense, bad


def check_label_structure(
    labels: npt.ArrayLike | Sequence[Sequence[int]],
    *,
    parents: npt.ArrayLike | Hierarchy,
) -> LabelStructureReport:
    """Find label sets that are invalid for the taxonomy, before any model is involved.

    Parameters
    ----------
    labels : (N, K) ndarray of {0, 1}, or a length-N sequence of node-index sequences
        A numpy array is read as dense rows; any other sequence as node indices per clip. Dense rows are checked for values other than 0/1 and for ancestor closure; list rows are
        also checked for node indices outside ``[0, K)`` (the Django layer separately flags nodes
        that belong to another taxonomy version).
    parents : (K,) int array or Hierarchy
        Parent index of each node, -1 for roots.

    Returns
    -------
    LabelStructureReport
        Per-row masks and the ancestors each unclosed row is missing.

    Raises
    ------
    ValueError
        If a dense ``labels`` is not 2-d with K columns.
    """
    h = as_hierarchy(parents)
    k = h.n_nodes
    if isinstance(labels, np.ndarray):
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"labels must have shape (N, {k}) to match parents, got {y.shape}")
        invalid: BoolArray = ~np.all((y == 0) | (y == 1), axis=1)
        dense: BoolArray = np.where(invalid[:, None], 0.0, y) > 0
        out_of_range: BoolArray = np.zeros(y.shape[0], dtype=bool)
    else:
        rows: list[Sequence[int]] = list(labels)  # type: ignore[arg-type]
        dense_i8, out_of_range = labels_to_dense(rows, n_nodes=k)
        dense = dense_i8 > 0
        invalid = np.zeros(len(rows), dtype=bool)
    unclosed = h.not_ancestor_closed(dense) & ~invalid
    closed = h.ancestor_close(dense[unclosed]) > 0
    missing: list[IntArray] = [np.empty(0, dtype=np.int64)] * dense.shape[0]
    for j, row in enumerate(np.flatnonzero(unclosed)):
        missing[row] = np.flatnonzero(closed[j] & ~dense[row]).astype(np.int64)
    return LabelStructureReport(
        out_of_range=out_of_range,
        invalid_value=invalid,
        not_ancestor_closed=unclosed,
        missing_ancestors=tuple(missing),
    )


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _validate(
    labels: npt.ArrayLike, pred_probs: npt.ArrayLike, parents: npt.ArrayLike | Hierarchy
) -> tuple[BoolArray, FloatArray, BoolArray, Hierarchy]:
    """(labels as bool, pred_probs, each clip's parent labels (N, K) bool, hierarchy), checked.

    ``pred_probs`` keeps a float32 or float64 dtype (other input becomes float64). The parent
    columns are gathered once (``np.take``, far faster than fancy indexing on a C-ordered matrix)
    and serve the closure check, the consistency check and, later, the decisions made.
    """
    h = as_hierarchy(parents)
    k = h.n_nodes
    p = np.asarray(pred_probs)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    p = np.ascontiguousarray(p)
    y_raw = np.asarray(labels)
    if p.ndim != 2:
        raise ValueError(f"pred_probs must be 2-d (N, K), got shape {p.shape}")
    if y_raw.ndim != 2:
        raise ValueError(
            f"labels must be a dense 2-d (N, K) 0/1 array, got shape {y_raw.shape}; "
            "convert index lists with labels_to_dense"
        )
    if p.shape[1] != k:
        raise ValueError(f"pred_probs has {p.shape[1]} columns but parents describes K={k} nodes")
    if y_raw.shape != p.shape:
        raise ValueError(f"labels shape {y_raw.shape} differs from pred_probs shape {p.shape}")
    if p.size:
        lo, hi = float(p.min()), float(p.max())  # NaN propagates and fails both comparisons
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError("pred_probs must be finite probabilities in [0, 1]")
    if y_raw.dtype == np.bool_:
        y = np.ascontiguousarray(y_raw)
    else:
        y = np.ascontiguousarray(y_raw != 0)
        if not np.array_equal(y, y_raw == 1):
            raise ValueError("labels must be 0/1 (see check_label_structure)")
    par_or_self = _parent_or_self(h)
    y_par = np.take(y, par_or_self, axis=1)
    if np.any(y & ~y_par):  # a root is its own "parent" here, so it never fails
        n_bad = int(h.not_ancestor_closed(y).sum())
        raise ValueError(
            f"{n_bad} label rows are not ancestor-closed; run check_label_structure first or "
            "close them with Hierarchy.ancestor_close"
        )
    if p.size and (h.parents >= 0).any():
        # In row blocks, so the difference stays in cache instead of a second (N, K) temporary.
        excess = max(
            float((blk - np.take(blk, par_or_self, axis=1)).max())
            for blk in (p[i : i + _BLOCK_ROWS] for i in range(0, p.shape[0], _BLOCK_ROWS))
        )
        if excess > CONSISTENCY_TOL:
            raise ValueError(
                "pred_probs are not hierarchy-consistent (a child exceeds its parent by "
                f"{excess:.3g}); apply Hierarchy.make_consistent"
            )
    return y, p, y_par, h


def _parent_or_self(h: Hierarchy) -> IntArray:
    out: IntArray = np.where(h.parents >= 0, h.parents, np.arange(h.n_nodes)).astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Active:
    """The decisions that were made, in sparse row-major form (entry e is clip ``row[e]``, node
    ``node[e]``; entries are sorted by row). A decision is made at a root and wherever the parent is
    labelled, so there are far fewer than N * K of them."""

    n_rows: int
    n_nodes: int
    row: IntArray
    node: IntArray
    on: BoolArray  # the label says on
    cond: FloatArray  # P(node | parent)
    starts: IntArray  # (N + 1,) offsets of each row's entries

    @property
    def selfconf(self) -> FloatArray:
        out: FloatArray = np.where(self.on, self.cond, self.cond.dtype.type(1.0) - self.cond)
        return out

    def dense(self, values: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """(N, K) (or (len(rows), K)) array of ``values`` at the entries, 1.0 elsewhere."""
        if rows is None:
            out = np.ones((self.n_rows, self.n_nodes), dtype=values.dtype)
            out[self.row, self.node] = values
            return out
        lens = self.starts[rows + 1] - self.starts[rows]
        ent = np.repeat(self.starts[rows] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        out = np.ones((rows.shape[0], self.n_nodes), dtype=values.dtype)
        out[np.repeat(np.arange(rows.shape[0]), lens), self.node[ent]] = values[ent]
        return out


def _active_decisions(y: BoolArray, p: FloatArray, y_par: BoolArray, h: Hierarchy) -> _Active:
    """The decisions made (``y_par`` is consumed: it becomes the (N, K) mask of made decisions)."""
    n, k = y.shape
    active = y_par
    active[:, h.roots] = True
    flat = np.flatnonzero(active)  # row-major, so entries come sorted by row
    row = flat // k
    node = flat - row * k
    pv = p.reshape(-1)[flat]
    par = h.parents[node]
    has_par = par >= 0
    pp = np.where(has_par, p.reshape(-1)[row * k + np.where(has_par, par, 0)], 1.0)
    cond = np.clip(pv / np.maximum(pp, p.dtype.type(1e-12)), 0.0, 1.0).astype(p.dtype)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=starts[1:])
    return _Active(
        n_rows=n,
        n_nodes=k,
        row=row,
        node=node,
        on=y.reshape(-1)[flat],
        cond=cond,
        starts=starts,
    )


def _node_means(act: _Active, values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-node mean of ``values`` over the "on" and over the "off" entries, each (K,); 1.0 where
    that decision was never made at the node (so nothing is measured against it)."""
    k = act.n_nodes
    on = act.on
    n_on = np.bincount(act.node, weights=on, minlength=k)
    n_all = np.bincount(act.node, minlength=k).astype(np.float64)
    s_on = np.bincount(act.node, weights=np.where(on, values, 0.0), minlength=k)
    s_all = np.bincount(act.node, weights=values, minlength=k)
    n_off = n_all - n_on
    t_on = np.where(n_on > 0, s_on / np.maximum(n_on, 1.0), 1.0)
    t_off = np.where(n_off > 0, (s_all - s_on) / np.maximum(n_off, 1.0), 1.0)
    return t_on, t_off


def _logit(x: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    x = np.clip(x, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(x / (1.0 - x))


def _fit_platt(
    node: IntArray, z: FloatArray, t: FloatArray, k: int, ridge: float
) -> tuple[FloatArray, FloatArray]:
    """Per-node logistic fit ``t ~ sigmoid(a[node] z + b[node])`` by damped Newton, vectorised."""
    a = np.ones(k)
    b = np.zeros(k)
    # A node whose decisions are all one way (a single child that is always on, a node nobody
    # labels) has no calibration to learn: it keeps the raw probabilities.
    n_on = np.bincount(node, t, minlength=k)
    n_all = np.bincount(node, minlength=k)
    fit = (n_on >= 1) & (n_all - n_on >= 1)
    for _ in range(_CALIBRATION_ITERS):
        q = 1.0 / (1.0 + np.exp(-(a[node] * z + b[node])))
        g = q - t
        w = np.maximum(q * (1.0 - q), 1e-9)
        ga = np.bincount(node, g * z, minlength=k) + ridge * (a - 1.0)
        gb = np.bincount(node, g, minlength=k) + ridge * b
        haa = np.bincount(node, w * z * z, minlength=k) + ridge
        hab = np.bincount(node, w * z, minlength=k)
        hbb = np.bincount(node, w, minlength=k) + ridge
        det = haa * hbb - hab * hab
        da = (hbb * ga - hab * gb) / det
        db = (haa * gb - hab * ga) / det
        # Damped Newton: saturated predictions make the Hessian tiny and a full step overshoot.
        step = np.minimum(1.0, 1.0 / np.maximum(np.maximum(np.abs(da), np.abs(db)), 1e-12))
        da = np.where(fit, da * step, 0.0)
        db = np.where(fit, db * step, 0.0)
        a = np.maximum(a - da, 0.0)  # never invert the model's ordering at a node
        b -= db
        if max(float(np.abs(da).max(initial=0.0)), float(np.abs(db).max(initial=0.0))) < 1e-6:
            break
    return a, b


def _calibration_sample(act: _Active, max_rows: int) -> IntArray:
    """Indices of the entries of at most ``max_rows`` evenly spaced rows."""
    n = act.n_rows
    if n <= max_rows:
        return np.arange(act.row.shape[0], dtype=np.int64)
    keep = np.zeros(n, dtype=bool)
    keep[np.linspace(0, n - 1, max_rows).round().astype(np.int64)] = True
    return np.flatnonzero(keep[act.row]).astype(np.int64)


def calibrate_decisions(
    y: BoolArray,
    cond: FloatArray,
    active: BoolArray,
    *,
    max_rows: int = CALIBRATION_MAX_ROWS,
    ridge: float = CALIBRATION_RIDGE,
) -> tuple[FloatArray, FloatArray]:
    """Per-node Platt calibration of the model's conditional probabilities against the labels.

    For each node k, fits ``P(label says on | z) = sigmoid(a_k z + b_k)`` with ``z = logit P(k |
    parent)`` over the clips where the decision at k was made, by Newton's method vectorised over
    nodes, with a ridge of ``ridge`` toward ``a = 1, b = 0`` (the raw probabilities) and ``a >= 0``
    (calibration may flatten a node the model cannot tell apart, never invert it). Nodes whose
    decisions are all one way keep ``a = 1, b = 0``.

    Parameters
    ----------
    y : (N, K) bool
        Given labels.
    cond : (N, K) float
        Conditional probabilities ``P(k | parent)``.
    active : (N, K) bool
        Where the decision was made.
    max_rows : int
        Fit on at most this many rows, evenly spaced (calibration needs far fewer rows than
        scoring; the fit costs O(max_rows * mean active decisions per row)).
    ridge : float
        Strength of the pull toward the identity, in decisions.

    Returns
    -------
    a, b : (K,) float64
        Slope and intercept per node.
    """
    y = np.asarray(y, dtype=bool)
    active = np.asarray(active, dtype=bool)
    row, node = np.nonzero(active)
    n = y.shape[0]
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=starts[1:])
    act = _Active(n, y.shape[1], row, node, y[row, node], np.asarray(cond)[row, node], starts)
    return _calibrate(act, max_rows=max_rows, ridge=ridge)


def _calibrate(act: _Active, *, max_rows: int, ridge: float) -> tuple[FloatArray, FloatArray]:
    ent = _calibration_sample(act, max_rows)
    z = np.asarray(_logit(act.cond[ent].astype(np.float64)), dtype=np.float64)
    return _fit_platt(act.node[ent], z, act.on[ent].astype(np.float64), act.n_nodes, ridge)


def _entry_scores(act: _Active, method: str) -> FloatArray:
    """Score of every made decision (entry), lower = more suspect."""
    if method == "self_confidence":
        return act.selfconf
    if method == "normalized":
        sc = act.selfconf
    elif method == "calibrated":
        a, b = _calibrate(act, max_rows=CALIBRATION_MAX_ROWS, ridge=CALIBRATION_RIDGE)
        dt = act.cond.dtype
        za = a.astype(dt)[act.node] * _logit(act.cond) + b.astype(dt)[act.node]
        np.negative(za, out=za, where=act.on)  # exp(-za) below: the given decision's side
        sc = np.asarray(1.0 / (1.0 + np.exp(za)), dtype=dt)
    else:
        raise ValueError(
            f"unknown method {method!r}; use 'calibrated', 'self_confidence' or 'normalized'"
        )
    t_on, t_off = _node_means(act, sc)
    dt = sc.dtype
    t = np.where(act.on, t_on.astype(dt)[act.node], t_off.astype(dt)[act.node])
    out: FloatArray = np.minimum(sc / np.maximum(t, dt.type(1e-12)), dt.type(1.0))
    return out


def decision_scores(
    labels: npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    method: Method = "calibrated",
) -> tuple[FloatArray, BoolArray]:
    """Score every parent -> child decision of every clip.

    Parameters
    ----------
    labels : (N, K) {0, 1}, ancestor-closed
    pred_probs : (N, K) float, out-of-sample and hierarchy-consistent
    parents : (K,) int or Hierarchy
    method : {"calibrated", "self_confidence", "normalized"}
        ``"self_confidence"``: the model's probability of the decision the label made, given the
        parent. ``"normalized"``: that probability divided by its per-node confident-learning
        threshold (the mean self-confidence of the same decision at the same node), capped at 1, so
        that decisions the model finds hard everywhere (close siblings) do not swamp easy ones.
        ``"calibrated"`` (default): as ``"normalized"``, after a per-node Platt calibration of the
        conditional probabilities against the given labels (:func:`calibrate_decisions`), which
        puts every node's confidences on one scale.

    Returns
    -------
    scores : (N, K) float
        Decision scores, lower = more suspect; 1.0 where no decision was made.
    active : (N, K) bool
        True where the decision was made (the node is a root or its parent is labelled).
    """
    y, p, y_par, h = _validate(labels, pred_probs, parents)
    act = _active_decisions(y, p, y_par, h)
    scores = act.dense(_entry_scores(act, method))
    active = np.zeros(y.shape, dtype=bool)
    active[act.row, act.node] = True
    return scores, active


def _pool_entries(
    act: _Active, scores: FloatArray, pooling: str, alpha: float, temperature: float
) -> FloatArray:
    """Pool entry scores per row, as :func:`_pool` would on the dense (N, K) matrix with 1.0 at
    every decision that was not made, without building it."""
    n, k = act.n_rows, act.n_nodes
    if k == 0 or n == 0:
        return np.ones(n)
    counts = np.diff(act.starts)
    nonempty = counts > 0
    if pooling in ("min", "softmin"):
        mins = np.ones(n, dtype=np.float64)
        if scores.size:
            red = np.minimum.reduceat(scores, act.starts[:-1][nonempty])
            mins[nonempty] = np.minimum(red, 1.0)
        if pooling == "min":
            return mins
        # cleanlab's softmin: sum_k s_k * softmax(-s / T)_k, with the K - count entries at 1.0
        w = np.exp(-(scores.astype(np.float64) - mins[act.row]) / temperature)
        w_rest = (k - counts) * np.exp(-(1.0 - mins) / temperature)
        num = np.bincount(act.row, weights=scores * w, minlength=n) + w_rest
        den = np.bincount(act.row, weights=w, minlength=n) + w_rest
        return np.asarray(num / den, dtype=np.float64)
    if pooling != "ema":
        raise ValueError(f"unknown pooling {pooling!r}; use 'ema', 'softmin' or 'min'")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    m = ema_terms(alpha, k)
    # Entries laid out in a compact (N, width) matrix padded with 1.0 (the decisions not made).
    width = max(int(counts.max(initial=0)), m)
    pos = np.arange(act.row.shape[0]) - act.starts[act.row]
    compact = np.ones((n, width), dtype=scores.dtype)
    compact[act.row, pos] = scores
    return worst_decision_ema(compact, alpha=alpha, m=m, overwrite=True)


def _pool(scores: FloatArray, pooling: str, alpha: float, temperature: float) -> FloatArray:
    """Pool a dense (N, K) matrix of decision scores per row."""
    n, k = scores.shape
    if k == 0:
        return np.ones(n)
    scores = np.asarray(scores)
    if pooling == "min":
        return np.asarray(scores.min(axis=1), dtype=np.float64)
    if pooling == "softmin":
        z = -scores / temperature
        z -= z.max(axis=1, keepdims=True)
        w = np.exp(z)
        return np.asarray((scores * w).sum(axis=1) / w.sum(axis=1), dtype=np.float64)
    if pooling != "ema":
        raise ValueError(f"unknown pooling {pooling!r}; use 'ema', 'softmin' or 'min'")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return worst_decision_ema(scores, alpha=alpha)


def _resolve_alpha(method: str, alpha: float | None) -> float:
    if alpha is not None:
        return float(alpha)
    if method not in DEFAULT_ALPHA:
        raise ValueError(
            f"unknown method {method!r}; use 'calibrated', 'self_confidence' or 'normalized'"
        )
    return DEFAULT_ALPHA[method]


def label_quality_scores(
    labels: npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    method: Method = "calibrated",
    pooling: Pooling = "ema",
    alpha: float | None = None,
    temperature: float = 0.1,
) -> FloatArray:
    """Label quality score of each clip's label set; lower = more likely mislabelled.

    Parameters
    ----------
    labels : (N, K) {0, 1}
        Given label sets, ancestor-closed.
    pred_probs : (N, K) float
        Out-of-sample model probabilities, hierarchy-consistent.
    parents : (K,) int or Hierarchy
        Parent index of each node, -1 for roots.
    method : {"calibrated", "self_confidence", "normalized"}
        How each parent -> child decision is scored (see :func:`decision_scores`). The default
        ``"calibrated"`` is the most accurate on the corpus benchmark; ``"self_confidence"`` on flat
        labels (K roots) reproduces cleanlab's multi-label scores.
    pooling : {"ema", "softmin", "min"}
        How per-decision scores become one score per clip. ``"ema"`` (default, as cleanlab):
        exponential moving average of the decision scores sorted from best to worst, so the worst
        decision weighs ``alpha``, the second worst ``alpha * (1 - alpha)``, and so on.
    alpha : float, optional
        EMA forgetting factor; by default 0.99 for ``"calibrated"`` (the worst decision decides,
        more failed decisions break ties) and cleanlab's 0.8 for the other methods.
    temperature : float, default 0.1
        Softmin temperature.

    Returns
    -------
    scores : (N,) float in [0, 1]
        Lower = more suspect.

    Raises
    ------
    ValueError
        On bad shapes, labels that are not 0/1 or not ancestor-closed, or inconsistent probabilities.

    Examples
    --------
    >>> parents = [-1, 0, 0]
    >>> labels = [[1, 1, 0], [1, 0, 1]]
    >>> probs = [[0.9, 0.8, 0.1], [0.9, 0.85, 0.05]]
    >>> s = label_quality_scores(labels, probs, parents=parents, method="self_confidence")
    >>> bool(s[1] < s[0])
    True
    """
    a = _resolve_alpha(method, alpha)
    y, p, y_par, h = _validate(labels, pred_probs, parents)
    act = _active_decisions(y, p, y_par, h)
    return _pool_entries(act, _entry_scores(act, method), pooling, a, temperature)


# --------------------------------------------------------------------------------------------------
# Issues
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelIssues:
    """Label issues ranked most suspect first (row i of every array is the i-th issue).

    Attributes
    ----------
    clip : (n,) int64
        Clip (row) index into ``labels``.
    score : (n,) float64
        The clip's label quality score (lower = more suspect).
    node : (n,) int64
        The suspect node: the wrongly labelled node for ``wrong_sibling``, ``wrong_branch`` and
        ``extra_genre``; the node that should be added for ``missing_genre``.
    depth : (n,) int64
        Depth of ``node`` (roots are 0).
    issue_type : (n,) str
        One of :data:`ISSUE_TYPES`.
    suggested_labels : (n, K) int8
        Ancestor-closed label set the detector suggests: the suspect part replaced by (swaps),
        extended by (missing) or stripped of (extra) the model's most probable path.
    """

    clip: IntArray
    score: FloatArray
    node: IntArray
    depth: IntArray
    issue_type: npt.NDArray[np.str_]
    suggested_labels: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.clip.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per issue (suggested labels as node-index lists), for storage."""
        return [
            {
                "clip": int(self.clip[i]),
                "score": float(self.score[i]),
                "node": int(self.node[i]),
                "depth": int(self.depth[i]),
                "issue_type": str(self.issue_type[i]),
                "suggested_nodes": np.flatnonzero(self.suggested_labels[i]).tolist(),
            }
            for i in range(len(self))
        ]


def _flagged_entries(act: _Active) -> BoolArray:
    """Confident-learning rule per made decision (entry): the model is at least as confident in the
    *opposite* decision as it is, on average, for clips labelled with that opposite decision, and
    prefers it (cleanlab's ``"both"`` filter: confident joint and the model's own decision agree)."""
    t_on, t_off = _node_means(act, act.selfconf)
    c = act.cond
    t_on_e = t_on.astype(c.dtype)[act.node]
    t_off_e = t_off.astype(c.dtype)[act.node]
    flag_off = ~act.on & (c >= t_on_e) & (c > 0.5)  # labelled off, looks like a typical "on"
    flag_on = act.on & ((1.0 - c) >= t_off_e) & (c < 0.5)  # labelled on, looks like a typical "off"
    out: BoolArray = flag_off | flag_on
    return out


def _explain(
    yr: BoolArray,
    cr: FloatArray,
    sr: FloatArray,
    ar: BoolArray,
    fr: BoolArray,
    h: Hierarchy,
    min_conditional: float,
) -> tuple[IntArray, npt.NDArray[np.str_], npt.NDArray[np.int8]]:
    """Suspect node, issue type and suggested labels for each of n rows.

    All inputs are (n, K) for the rows to explain: labels, conditionals, decision scores (lower =
    more suspect; they pick the decision that explains a row), made decisions and CL flags."""
    n = yr.shape[0]
    k = h.n_nodes
    if n == 0:
        return (
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype="<U13"),
            np.empty((0, k), dtype=np.int8),
        )
    idx = np.arange(n)
    # The decision that explains the row: the shallowest flagged one (an error high in the tree
    # explains the doubts below it), the worst-scored among equals; the worst overall if none.
    depth = h.depth.astype(np.float64)
    key = np.where(fr, depth[None, :] * 2.0 + sr, np.inf)  # selfconf in [0, 1] breaks depth ties
    any_flag = fr.any(axis=1)
    worst = np.where(ar, sr, np.inf).argmin(axis=1)
    k0 = np.where(any_flag, key.argmin(axis=1), worst)
    d_on = yr[idx, k0]

    par = h.parents
    sib = (par[:, None] == par[None, :]) & ~np.eye(k, dtype=bool)  # roots are siblings of roots
    s_mask = sib[k0]
    lab_sib = s_mask & yr
    unl_sib = s_mask & ~yr
    unl_val = np.where(unl_sib, cr, -1.0)
    best_unl = unl_val.argmax(axis=1)
    best_unl_p = unl_val[idx, best_unl]
    lab_lo_val = np.where(lab_sib, cr, np.inf)
    weakest_lab = lab_lo_val.argmin(axis=1)
    weakest_lab_p = lab_lo_val[idx, weakest_lab]
    has_lab = lab_sib.any(axis=1)
    has_unl = unl_sib.any(axis=1)
    own = cr[idx, k0]

    # An alternative (or a labelled sibling) is "believed" when the model prefers it on (conditional
    # >= 0.5) or the confident-learning rule flags its decision.
    alt_believed = has_unl & ((best_unl_p >= 0.5) | fr[idx, best_unl])
    lab_doubted = has_lab & ((weakest_lab_p < 0.5) | fr[idx, weakest_lab])
    # Labelled on but doubted: a swap when a believed unlabelled sibling can replace it or nothing
    # else is labelled at this level (the parent needs a child); otherwise an extra genre.
    swap_on = d_on & has_unl & (alt_believed | ~has_lab)
    extra = d_on & ~swap_on
    # Labelled off but likely: a swap when a labelled sibling is doubted and less likely than this
    # node; otherwise a missing genre.
    swap_off = ~d_on & lab_doubted & (weakest_lab_p < own)
    missing = ~d_on & ~swap_off

    suspect = np.where(swap_off, weakest_lab, k0).astype(np.int64)
    replacement = np.where(swap_on, best_unl, k0).astype(np.int64)
    desc = h.ancestor_matrix.T  # desc[a] = a and its descendants
    suggested = yr.copy()
    removes = extra | swap_on | swap_off
    suggested[removes] &= ~desc[suspect[removes]]
    adds = swap_on | swap_off | missing
    if adds.any():
        suggested[adds] |= most_probable_descent(
            replacement[adds], cr[adds], h, min_score=min_conditional
        )
    is_root = h.depth[suspect] == 0
    types = np.full(n, "missing_genre", dtype="<U13")
    types[extra] = "extra_genre"
    swap = swap_on | swap_off
    types[swap & is_root] = "wrong_branch"
    types[swap & ~is_root] = "wrong_sibling"
    return suspect, types, suggested.astype(np.int8)


def find_label_issues(
    labels: npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    parents: npt.ArrayLike | Hierarchy,
    budget: int | None = None,
    method: Method = "calibrated",
    pooling: Pooling = "ema",
    alpha: float | None = None,
    temperature: float = 0.1,
    suggest_min_conditional: float = 0.0,
) -> LabelIssues:
    """Find, explain and rank the clips whose labels are probably wrong.

    Parameters
    ----------
    labels : (N, K) {0, 1}
        Given label sets, ancestor-closed.
    pred_probs : (N, K) float
        Out-of-sample model probabilities, hierarchy-consistent.
    parents : (K,) int or Hierarchy
        Parent index of each node, -1 for roots.
    budget : int, optional
        Return the ``budget`` most suspect clips (the top of the ranking, whether or not they pass
        the threshold). Without a budget, a clip is an issue when at least one of its decisions is
        flagged by the per-node confident-learning rule: the model gives the *opposite* decision at
        least the mean confidence it gives that decision on clips labelled with it, and prefers it
        (probability above 1/2).
    method, pooling, alpha, temperature
        Scoring options, as in :func:`label_quality_scores`.
    suggest_min_conditional : float, default 0.0
        When a suggested path descends from a node, a child is added only if its conditional
        probability reaches this value; 0 descends to a leaf along the most probable children.

    Returns
    -------
    LabelIssues
        Ranked most suspect first (ascending score, ties by clip index).

    Raises
    ------
    ValueError
        On bad shapes or values, or a negative budget.
    """
    if budget is not None and (int(budget) != budget or budget < 0):
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    a = _resolve_alpha(method, alpha)
    y, p, y_par, h = _validate(labels, pred_probs, parents)
    act = _active_decisions(y, p, y_par, h)
    entry_scores = _entry_scores(act, method)
    scores = _pool_entries(act, entry_scores, pooling, a, temperature)
    flags = _flagged_entries(act)
    if budget is not None:
        b = min(int(budget), scores.shape[0])
        if b == 0:
            rows = np.empty(0, dtype=np.int64)
        else:
            top = np.argpartition(scores, b - 1)[:b] if b < scores.shape[0] else np.arange(b)
            rows = top[np.lexsort((top, scores[top]))].astype(np.int64)
    else:
        cand = np.flatnonzero(np.bincount(act.row[flags], minlength=act.n_rows) > 0)
        rows = cand[np.lexsort((cand, scores[cand]))].astype(np.int64)
    ar = act.dense(np.zeros(act.row.shape[0], dtype=np.float32), rows) == 0
    node, types, suggested = _explain(
        y[rows],
        h.decision_probabilities(p[rows], dtype=p.dtype.type)[0],
        act.dense(entry_scores, rows),
        ar,
        act.dense((~flags).astype(np.float32), rows) == 0,
        h,
        suggest_min_conditional,
    )
    return LabelIssues(
        clip=rows,
        score=scores[rows],
        node=node,
        depth=h.depth[node].astype(np.int64),
        issue_type=types,
        suggested_labels=suggested,
    )
