"""Worst-decision pooling: one score per clip from its per-decision scores.

A clip's label set is a series of parent→child decisions, each scored in [0, 1] (1 = sure and
right). cleanlab's multi-label scorer pools them with an exponential moving average over the scores
sorted from best to worst, so the worst decision weighs ``alpha``, the second worst
``alpha * (1 - alpha)`` and so on: the worst decision decides and further failed decisions break
ties. ``quality.core.label_issues`` scores annotators' label sets this way and
``active_learning.core.acquisition`` the model's own, on the same scale.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

#: Most worst decisions the EMA pools; older terms weigh at most ``(1 - alpha) ** (m - 1)``.
EMA_TERMS = 12


def ema_terms(alpha: float, k: int) -> int:
    """How many of the worst scores the EMA needs for ``alpha`` over ``k`` decisions.

    The terms left out weigh at most ``(1 - alpha) ** (m - 1)`` together; ``m`` is the smallest
    with that below 1e-8, at most :data:`EMA_TERMS` and at most ``k``.
    """
    m = EMA_TERMS
    if 0.0 < alpha < 1.0:
        m = min(m, 1 + int(np.ceil(np.log(1e-8) / np.log(1.0 - alpha))))
    elif alpha == 1.0:
        m = 1
    return min(k, m)


def worst_decision_ema(
    scores: FloatArray, *, alpha: float, m: int | None = None, overwrite: bool = False
) -> npt.NDArray[np.float64]:
    """cleanlab's EMA of each row's ``m`` smallest scores, folded in from best to worst.

    Parameters
    ----------
    scores : (N, K) float
        Per-decision scores; decisions not made score 1.0.
    alpha : float
        Weight of the worst decision, in [0, 1].
    m : int, optional
        How many of the worst scores to pool; by default :func:`ema_terms` ``(alpha, K)``.
    overwrite : bool
        Partition ``scores`` in place instead of copying it (saves one (N, K) array).

    Returns
    -------
    (N,) float64
        1.0 for rows with no column.
    """
    n, k = scores.shape
    if k == 0:
        return np.ones(n)
    if m is None:
        m = ema_terms(alpha, k)
    if m < k:
        if overwrite:
            scores.partition(m - 1, axis=1)
        else:
            scores = np.partition(scores, m - 1, axis=1)
    worst = -np.sort(-scores[:, :m], axis=1).astype(np.float64)  # descending, worst last
    ema = worst[:, 0].copy()
    for j in range(1, m):
        ema = alpha * worst[:, j] + (1.0 - alpha) * ema
    return np.asarray(ema, dtype=np.float64)
