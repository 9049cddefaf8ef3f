"""Out-of-sample probabilities on (possibly noisy) corpus labels, for the label-quality benchmarks
(``bench.quality_detection``, ``bench.quality_relabel_loop``)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from taxonomy.hierarchy import Hierarchy


def oos_probs(
    x: np.ndarray,
    y: np.ndarray,
    h: Hierarchy,
    strata: np.ndarray,
    *,
    seed: int,
    max_steps: int,
    hidden: int = 0,
) -> tuple[np.ndarray, str]:
    """5-fold out-of-sample probabilities from the project's model (stand-in if it is missing)."""
    p = np.zeros(y.shape, dtype=np.float64)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(x, strata)
    try:
        import torch

        from active_learning.core.models import HierarchicalClassifier

        torch.set_num_threads(1)
        arch = "linear" if hidden == 0 else f"hidden={hidden}"
        label = (
            f"project:active_learning.core.models.HierarchicalClassifier(conditional, {arch}, "
            f"max_steps={max_steps}), 5-fold StratifiedKFold on the noisy primary leaf"
        )

        def fit_predict(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            clf = HierarchicalClassifier(
                h.parents,
                device="cpu",
                seed=seed,
                max_steps=max_steps,
                min_steps=max_steps // 2,
                hidden=hidden,
            )
            return np.asarray(clf.fit(x[tr], y[tr]).predict_proba(x[te]))

    except ImportError:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        label = "stand-in: sklearn one-vs-rest logistic regression per node + make_consistent"

        def fit_predict(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            sc = StandardScaler().fit(x[tr])
            out = np.zeros((te.size, h.n_nodes))
            for k in range(h.n_nodes):
                yk = y[tr, k]
                if yk.min() == yk.max():
                    out[:, k] = yk[0]
                    continue
                lr = LogisticRegression(C=0.1, max_iter=300).fit(sc.transform(x[tr]), yk)
                out[:, k] = lr.predict_proba(sc.transform(x[te]))[:, 1]
            return h.make_consistent(out)

    for tr, te in folds:
        p[te] = fit_predict(tr, te)
    return h.make_consistent(np.clip(p, 0.0, 1.0)), label
