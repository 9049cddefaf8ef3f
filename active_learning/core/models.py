"""Hierarchical multi-label classifiers over clip embeddings (scikit-learn contract, torch inside).

Two ways to turn one network's K outputs into hierarchy-consistent probabilities:

``method="conditional"``
    One logit per node models P(node | parent on). It is trained only on rows whose parent is on
    (roots on every row); a sibling group whose training rows always carry exactly one child (a
    single-label branch) uses a softmax over the siblings instead of independent sigmoids
    (``siblings="auto"``). Marginals are products down the tree, so a child never exceeds its parent
    by construction.
``method="flat"``
    One independent sigmoid per node trained on every row, then the consistency projection
    :meth:`Hierarchy.make_consistent` (a child is clipped to its parent, top-down).

On the corpus benchmark (``bench/al_corpus.py``, seed 0) the two are close: in train-split CV they
trade places within ~0.01-0.02 leaf accuracy; on the test split the conditional model is ahead on leaf
accuracy and depth-1/2 macro F1 for logmel-stats (0.36 vs 0.33) and musicnn-msd (0.48 vs 0.43), flat
ahead for the concatenation (0.41 vs 0.43). The conditional model is the default (it also gives
the parent->child conditionals that label-issue scoring wants); see ``bench/results/al_corpus.json``.

Training is full-data mini-batch AdamW with a cosine learning-rate schedule on standardised inputs,
an optional hidden layer, on CUDA when available. Labels may contain NaN (unknown): those entries are
left out of the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from taxonomy.hierarchy import Hierarchy

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "HierarchicalClassifier",
    "auto_device",
    "hierarchical_loss",
    "pack_targets",
    "single_label_sibling_groups",
    "synthetic_hierarchical_data",
    "train_loop",
]


def auto_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _GroupedHead:
    """Turns (B, K) logits into log-probabilities of P(node | parent) and marginals.

    ``softmax_groups`` is a padded (G, S) index matrix of sibling groups modelled jointly (pad = -1);
    every other node is an independent sigmoid.
    """

    def __init__(self, hierarchy: Hierarchy, softmax_groups: list[npt.NDArray[np.int64]]) -> None:
        k = hierarchy.n_nodes
        self.k = k
        self.parents = hierarchy.parents
        self.in_softmax = np.zeros(k, dtype=bool)
        size = max((len(g) for g in softmax_groups), default=0)
        groups = np.full((len(softmax_groups), size), -1, dtype=np.int64)
        for i, g in enumerate(softmax_groups):
            groups[i, : len(g)] = g
            self.in_softmax[g] = True
        self.groups = groups
        # Levels for the top-down product: nodes of depth d, and their parents.
        depth = hierarchy.depth
        self.levels = [
            (np.flatnonzero(depth == d), hierarchy.parents[depth == d])
            for d in range(1, hierarchy.max_depth + 1)
        ]

    def to(self, device: torch.device) -> _DeviceHead:
        return _DeviceHead(self, device)


class _DeviceHead:
    def __init__(self, head: _GroupedHead, device: torch.device) -> None:
        self.k = head.k
        self.sig = torch.as_tensor(~head.in_softmax, device=device)
        self.has_groups = head.groups.shape[0] > 0
        g = torch.as_tensor(head.groups, device=device)
        self.group_idx = g.clamp(min=0)
        self.group_pad = g < 0
        self.group_flat = g[~self.group_pad]
        self.levels = [
            (torch.as_tensor(n, device=device), torch.as_tensor(p, device=device))
            for n, p in head.levels
        ]

    def conditional_log_probs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) logits -> (log P(node|parent), log P(not node|parent)), each (B, K)."""
        logp = torch.nn.functional.logsigmoid(logits)
        lognp = logp - logits  # log(1 - sigmoid(z)) = log sigmoid(z) - z
        if self.has_groups:
            z = logits[:, self.group_idx].masked_fill(self.group_pad, float("-inf"))
            lsm = torch.log_softmax(z, dim=-1)  # (B, G, S)
            vals = lsm[:, ~self.group_pad]  # (B, n_grouped)
            logp = logp.index_copy(1, self.group_flat, vals)
            lognp = lognp.index_copy(
                1, self.group_flat, torch.log1p(-vals.exp().clamp(max=1 - 1e-7))
            )
        return logp, lognp

    def marginals(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) logits -> (B, K) marginal probabilities, consistent by construction."""
        logp, _ = self.conditional_log_probs(logits)
        logm = logp.clone()
        for nodes, pars in self.levels:
            logm[:, nodes] = logp[:, nodes] + logm[:, pars]
        return logm.exp()


def single_label_sibling_groups(
    h: Hierarchy, y: npt.NDArray[np.float32]
) -> list[npt.NDArray[np.int64]]:
    """Sibling groups (children of one parent, >= 2) that are single-label in ``y`` (N, K).

    A group qualifies when at least two rows have the parent on and every such row has exactly one
    child of the group on (and no unknown entry there): a softmax then fits it better than
    independent sigmoids.
    """
    groups: list[npt.NDArray[np.int64]] = []
    known = np.isfinite(y)
    for par in range(h.n_nodes):
        kids = h.children[par]
        if kids.size < 2:
            continue
        rows = (y[:, par] == 1) & known[:, kids].all(axis=1)
        if rows.sum() < 2 or not known[:, par].all():
            continue
        if np.all(np.nansum(y[rows][:, kids], axis=1) == 1):
            groups.append(kids)
    return groups


def pack_targets(
    h: Hierarchy, y: npt.NDArray[np.float32], *, conditional: bool
) -> npt.NDArray[np.float32]:
    """(N, 2K) float32: targets (NaN -> 0) then loss mask (0 where unknown, or where the parent is
    off for the conditional model, since P(node | parent) is only observed when the parent is on)."""
    known = np.isfinite(y)
    target = np.where(known, y, 0.0).astype(np.float32)
    mask = known.astype(np.float32)
    if conditional:
        has_par = h.parents >= 0
        mask[:, has_par] *= target[:, h.parents[has_par]]
    return np.concatenate([target, mask], axis=1)


def hierarchical_loss(
    head: _GroupedHead, device: torch.device, *, conditional: bool
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss ``(logits (B, K), packed targets (B, 2K), weights (B,)) -> scalar`` for :func:`train_loop`.

    Flat: masked binary cross-entropy per node. Conditional: the same for sigmoid nodes (masked to
    rows whose parent is on) and the categorical log-likelihood of the positive child for softmax
    sibling groups.
    """
    k = head.k
    dev_head = head.to(device)
    is_sigmoid = torch.as_tensor(~head.in_softmax, device=device)

    def loss_fn(logits: torch.Tensor, tm: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t, m = tm[:, :k], tm[:, k:]
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if conditional and dev_head.has_groups:
            logp, _ = dev_head.conditional_log_probs(logits)
            nll = torch.where(is_sigmoid, nll, -t * logp)
        return ((nll * m).sum(dim=1) * w).mean()

    return loss_fn


def _make_mlp(d_in: int, k: int, hidden: int, dropout: float) -> torch.nn.Module:
    if hidden <= 0:
        return torch.nn.Linear(d_in, k)
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, k),
    )


def train_loop(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_epochs: int,
    min_steps: int,
    max_steps: int,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> list[float]:
    """Shared mini-batch AdamW + one-cycle cosine schedule loop; returns per-epoch mean loss.

    The number of steps is ``clip(max_epochs * ceil(N / batch_size), min_steps, max_steps)`` so
    that small data sets get enough updates and huge ones stop after a few epochs.
    """
    n = inputs.shape[0]
    device = inputs.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bs = max(1, min(batch_size, n))
    per_epoch = math.ceil(n / bs)
    steps = int(np.clip(max_epochs * per_epoch, min_steps, max_steps))
    params = [p for p in module.parameters() if p.requires_grad]
    # A hand-rolled AdamW: torch.optim's first construction imports torch._dynamo (tens of seconds
    # cold on a busy 2-core box) and its per-step bookkeeping dominates for tiny linear heads.
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    warm = max(1, int(0.1 * steps))

    def lr_at(i: int) -> float:
        # One-cycle: linear warm-up over 10 % of the steps, then cosine decay to ~0.
        if i < warm:
            return lr * (i + 1) / warm
        return 0.5 * lr * (1.0 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))

    module.train()
    history: list[float] = []
    step = 0
    while step < steps:
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        count = 0
        for start in range(0, n, bs):
            if step >= steps:
                break
            idx = perm[start : start + bs]
            xb = inputs[idx]
            if augment is not None:
                xb = augment(xb, gen)
            loss = loss_fn(module(xb), targets[idx], weights[idx])
            for p in params:
                p.grad = None
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                rate = lr_at(step)
                c1 = 1.0 - beta1 ** (step + 1)
                c2 = 1.0 - beta2 ** (step + 1)
                for p, a, b in zip(params, m1, m2, strict=True):
                    if p.grad is None:
                        continue
                    g = p.grad
                    a.mul_(beta1).add_(g, alpha=1 - beta1)
                    b.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    p.mul_(1.0 - rate * weight_decay)
                    p.addcdiv_(a, (b / c2).sqrt_().add_(eps), value=-rate / c1)
            total += float(loss.detach()) * idx.shape[0]
            count += idx.shape[0]
            step += 1
        history.append(total / max(count, 1))
    module.eval()
    return history


class HierarchicalClassifier(BaseEstimator):  # type: ignore[misc]
    """Hierarchy-consistent multi-label classifier over embeddings.

    Parameters
    ----------
    parents : (K,) array-like of int
        Parent index of each node, -1 for roots (see :mod:`taxonomy.hierarchy`).
    method : {"conditional", "flat"}
        Per-parent conditional model multiplied down the tree (default), or flat sigmoids followed by
        the top-down consistency projection.
    siblings : {"auto", "sigmoid"}
        Conditional method only: ``"auto"`` models a sibling group with a softmax when every training
        row whose parent is on has exactly one child of the group on; ``"sigmoid"`` never does.
    hidden : int
        Width of one hidden ReLU layer; 0 (default) for a linear model.
    dropout : float
        Dropout after the hidden layer.
    weight_decay : float
        AdamW decoupled weight decay.
    lr : float
        Peak learning rate (one-cycle cosine schedule).
    batch_size, max_epochs, min_steps, max_steps : int
        Budget: ``clip(max_epochs * ceil(N / batch_size), min_steps, max_steps)`` optimiser steps.
    standardize : bool
        Centre and scale features with the training mean/std.
    device : str or None
        ``"cuda"``/``"cpu"``; None picks CUDA when available.
    seed : int
        Initialisation and batching seed.

    Attributes
    ----------
    hierarchy_ : Hierarchy
    n_features_in_ : int
    mean_, scale_ : (D,) float32
    module_ : torch.nn.Module
        The trained network, kept on CPU (moved to ``device`` for prediction).
    softmax_groups_ : list of (S,) int64
        Sibling groups modelled with a softmax (conditional method).
    loss_curve_ : list of float
        Mean training loss per epoch.

    Examples
    --------
    >>> clf = HierarchicalClassifier(parents).fit(X_train, Y_train)   # doctest: +SKIP
    >>> P = clf.predict_proba(X_test)  # (N, K), P[:, k] <= P[:, parents[k]]
    """

    def __init__(
        self,
        parents: npt.ArrayLike,
        *,
        method: Literal["conditional", "flat"] = "conditional",
        siblings: Literal["auto", "sigmoid"] = "auto",
        hidden: int = 0,
        dropout: float = 0.2,
        weight_decay: float = 1e-2,
        lr: float = 3e-2,
        batch_size: int = 512,
        max_epochs: int = 60,
        min_steps: int = 200,
        max_steps: int = 600,
        standardize: bool = True,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.parents = parents
        self.method = method
        self.siblings = siblings
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.standardize = standardize
        self.device = device
        self.seed = seed

    # ---------------------------------------------------------------------------------------------
    def _softmax_groups(
        self, h: Hierarchy, y: npt.NDArray[np.float32]
    ) -> list[npt.NDArray[np.int64]]:
        if self.method != "conditional" or self.siblings != "auto":
            return []
        return single_label_sibling_groups(h, y)

    def fit(
        self,
        X: npt.ArrayLike,
        Y: npt.ArrayLike,
        *,
        sample_weight: npt.ArrayLike | None = None,
    ) -> HierarchicalClassifier:
        """Fit on embeddings and ancestor-closed labels.

        Parameters
        ----------
        X : (N, D) float
            Embeddings.
        Y : (N, K) {0, 1, NaN}
            Ancestor-closed labels; NaN marks an unknown entry (left out of the loss).
        sample_weight : (N,) float, optional
            Per-row loss weight.

        Returns
        -------
        self
        """
        h = Hierarchy(np.asarray(self.parents))
        x = np.asarray(X, dtype=np.float32)
        y = np.asarray(Y, dtype=np.float32)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"X {x.shape} and Y {y.shape} must be (N, D) and (N, K)")
        if y.shape[1] != h.n_nodes:
            raise ValueError(f"Y has {y.shape[1]} columns but the hierarchy has {h.n_nodes} nodes")
        if self.method not in ("conditional", "flat"):
            raise ValueError(f"unknown method {self.method!r}")
        device = auto_device(self.device)
        torch.manual_seed(self.seed)

        if self.standardize:
            mean = x.mean(axis=0)
            scale = x.std(axis=0)
            scale[scale < 1e-8] = 1.0
        else:
            mean = np.zeros(x.shape[1], dtype=np.float32)
            scale = np.ones(x.shape[1], dtype=np.float32)
        self.mean_ = mean.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        self.hierarchy_ = h
        self.n_features_in_ = int(x.shape[1])
        self.softmax_groups_ = self._softmax_groups(h, y)
        self.head_ = _GroupedHead(h, self.softmax_groups_)

        packed_np = pack_targets(h, y, conditional=self.method == "conditional")
        sw = (
            np.ones(x.shape[0], dtype=np.float32)
            if sample_weight is None
            else np.asarray(sample_weight, dtype=np.float32).reshape(-1)
        )

        xt = torch.as_tensor((x - self.mean_) / self.scale_, device=device)
        packed = torch.as_tensor(packed_np, device=device)
        wt = torch.as_tensor(sw, device=device)
        module = _make_mlp(x.shape[1], h.n_nodes, self.hidden, self.dropout).to(device)
        loss_fn = hierarchical_loss(self.head_, device, conditional=self.method == "conditional")

        self.loss_curve_ = train_loop(
            module,
            loss_fn,
            xt,
            packed,
            wt,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            min_steps=self.min_steps,
            max_steps=self.max_steps,
            seed=self.seed,
        )
        self.module_ = module.cpu().eval()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X, Y) first."
            )

    @torch.inference_mode()
    def predict_proba(self, X: npt.ArrayLike, *, batch_size: int = 65536) -> FloatArray:
        """Hierarchy-consistent marginal probabilities.

        Parameters
        ----------
        X : (N, D) float

        Returns
        -------
        (N, K) float64 in [0, 1], with ``P[:, k] <= P[:, parents[k]]``.
        """
        self._check_fitted()
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {x.shape}; expected (N, {self.n_features_in_})")
        device = auto_device(self.device)
        module = self.module_.to(device)
        head = self.head_.to(device)
        out: FloatArray = np.empty((x.shape[0], self.hierarchy_.n_nodes), dtype=np.float64)
        for s in range(0, x.shape[0], batch_size):
            xb = torch.as_tensor((x[s : s + batch_size] - self.mean_) / self.scale_, device=device)
            logits = module(xb)
            if self.method == "flat":
                out[s : s + batch_size] = torch.sigmoid(logits).double().cpu().numpy()
            else:
                out[s : s + batch_size] = head.marginals(logits).double().cpu().numpy()
        self.module_.cpu()
        if self.method == "flat":
            out = self.hierarchy_.make_consistent(out)
        return np.clip(out, 0.0, 1.0)

    def predict(self, X: npt.ArrayLike, *, threshold: float = 0.5) -> npt.NDArray[np.int8]:
        """(N, K) {0, 1}: nodes whose marginal probability is at least ``threshold``.

        Ancestor-closed because the probabilities are hierarchy-consistent.
        """
        return (self.predict_proba(X) >= threshold).astype(np.int8)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def synthetic_hierarchical_data(
    parents: npt.ArrayLike,
    n: int,
    d: int,
    *,
    seed: int = 0,
    sample_seed: int | None = None,
    signal: float = 1.0,
    p_stop: float = 0.1,
    p_extra: float = 0.3,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Synthetic embeddings that carry a hierarchical label signal (tests and benchmarks).

    Each clip draws a primary path top-down (uniform root, then a uniform child at each level,
    stopping early at an internal node with probability ``p_stop``), and with probability ``p_extra``
    a second path. Every node k has a random prototype ``mu_k ~ N(0, I_D)``; a clip's features are
    ``signal * sum of its nodes' prototypes / sqrt(depth+1) + N(0, I_D)``. Prototypes depend on
    ``seed`` only; clips on ``sample_seed`` (default ``seed + 1``), so two calls with the same ``seed``
    and different ``sample_seed`` give a train and a test set of one task.

    Returns
    -------
    X : (n, d) float32
    Y : (n, K) int8, ancestor-closed
    primary : (n,) int64, the deepest node of each clip's primary path
    """
    h = Hierarchy(np.asarray(parents))
    k = h.n_nodes
    protos = np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)
    protos /= np.sqrt(h.depth + 1.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(seed + 1 if sample_seed is None else sample_seed)
    children = h.children
    roots = h.roots

    def draw() -> int:
        node = int(rng.choice(roots))
        while children[node].size and rng.random() >= p_stop:
            node = int(rng.choice(children[node]))
        return node

    primary = np.fromiter((draw() for _ in range(n)), dtype=np.int64, count=n)
    y: npt.NDArray[np.int8] = np.zeros((n, k), dtype=np.int8)
    y[np.arange(n), primary] = 1
    extra = rng.random(n) < p_extra
    extra_nodes = np.fromiter((draw() for _ in range(int(extra.sum()))), dtype=np.int64)
    y[np.flatnonzero(extra), extra_nodes] = 1
    y = h.ancestor_close(y)
    x = signal * (y.astype(np.float32) @ protos) + rng.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float32), y, primary
