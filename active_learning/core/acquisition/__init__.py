"""Acquisition strategies: which clips the next annotations are best spent on.

Every strategy implements one keyword-only signature (after small-text's ``QueryStrategy``) and
returns **ranked indices into the whole dataset, most valuable first**. Plain strategies rank only
unlabelled clips; :class:`RelabelOrNew` ranks labelled and unlabelled clips on one scale so that a
single sort decides between a new label and a second opinion.

Glossary
--------
N clips (labelled and unlabelled together), K taxonomy nodes, D embedding dimensions.

``pred_probs`` : (N, K) float or None
    Hierarchy-consistent model probabilities for every clip (out-of-sample for labelled clips when
    :class:`RelabelOrNew` uses them). ``None`` before the first model exists: the **cold start**.
``embeddings`` : (N, D) float
    Cached clip embeddings; Euclidean distance should mean something (standardise them first).
``labeled`` : (N,) bool mask, or an int array of labelled indices.
``parents`` : (K,) int, or a :class:`~taxonomy.hierarchy.Hierarchy`.
``consensus_quality`` : (N,) float in [0, 1], NaN (or anything) for unlabelled clips
    Quality of each labelled clip's current consensus label set, on the same per-decision
    probability scale as :func:`decision_confidence` (see :class:`RelabelOrNew`).
``n_annotations`` : (N,) int
    Annotations received so far per clip (0 for unlabelled clips).

Cold start
----------
When ``pred_probs`` is None every model-based strategy (uncertainty, BADGE-like, relabel-or-new)
falls back to k-means++ seeding over the embeddings (``cold_start="kcenter"`` picks k-center greedy
instead), with the labelled clips as already-chosen centres. :class:`RelabelOrNew` then returns new
clips only: without a model there is nothing to weigh a second opinion against.

Hierarchical decisions
----------------------
A label set over a tree is a sequence of parent→child decisions. With ``q = P(child | parent)``
(:meth:`Hierarchy.conditional`) and ``w = P(parent)`` (1 for roots), the decision for node k is
"is k on, given its parent is on", and it matters for a clip in proportion to ``w``. Summing
``w · H(q)`` over all nodes is, by the chain rule, the entropy of the whole label set under the
model's conditional-independence factorisation; the pooling options of
:func:`hierarchical_uncertainty` generalise that.

Layout
------
One module per strategy family, as small-text does: ``base`` (the interface, its errors, the request
checks), ``random_sampling``, ``uncertainty``, ``distance`` (the distance engine the diversity
strategies share), ``kcenter``, ``kmeanspp``, ``diversity`` (also the cold start), ``badge``,
``relabel`` (ActiveLab's relabel-or-new scoring) and ``registry``. A new strategy is a class with
``select`` in its family's module (or a new one), registered in ``registry``.
"""

from __future__ import annotations

from active_learning.core.acquisition.badge import BadgeLike, decision_gradient_factors
from active_learning.core.acquisition.base import (
    AcquisitionError,
    AcquisitionStrategy,
    EmptyPoolError,
    PoolSizeError,
)
from active_learning.core.acquisition.diversity import DiversitySampling
from active_learning.core.acquisition.kcenter import k_center_greedy
from active_learning.core.acquisition.kmeanspp import kmeans_pp_seeding
from active_learning.core.acquisition.random_sampling import RandomSampling
from active_learning.core.acquisition.registry import available_strategies, get_strategy
from active_learning.core.acquisition.relabel import (
    RelabelOrNew,
    RelabelOrNewSelection,
    activelab_scores,
    relabel_gain,
    vote_posterior,
)
from active_learning.core.acquisition.uncertainty import (
    HierarchicalUncertainty,
    decision_confidence,
    hierarchical_uncertainty,
)

__all__ = [
    "AcquisitionError",
    "AcquisitionStrategy",
    "BadgeLike",
    "DiversitySampling",
    "EmptyPoolError",
    "HierarchicalUncertainty",
    "PoolSizeError",
    "RandomSampling",
    "RelabelOrNew",
    "RelabelOrNewSelection",
    "activelab_scores",
    "available_strategies",
    "decision_confidence",
    "decision_gradient_factors",
    "get_strategy",
    "hierarchical_uncertainty",
    "k_center_greedy",
    "kmeans_pp_seeding",
    "relabel_gain",
    "vote_posterior",
]
