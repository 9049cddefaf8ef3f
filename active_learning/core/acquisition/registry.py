"""Strategies by name, for configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from active_learning.core.acquisition.badge import BadgeLike
from active_learning.core.acquisition.base import AcquisitionStrategy
from active_learning.core.acquisition.diversity import DiversitySampling
from active_learning.core.acquisition.random_sampling import RandomSampling
from active_learning.core.acquisition.relabel import RelabelOrNew
from active_learning.core.acquisition.uncertainty import HierarchicalUncertainty

# The strategies declare ``name`` as a ClassVar, which mypy does not match against the protocol's
# instance attribute; they satisfy the protocol at runtime (see the tests), hence the casts.
_StrategyFactory = Callable[..., AcquisitionStrategy]


_REGISTRY: dict[str, _StrategyFactory] = {
    "random": cast(_StrategyFactory, RandomSampling),
    "uncertainty": cast(_StrategyFactory, HierarchicalUncertainty),
    "diversity": cast(_StrategyFactory, DiversitySampling),
    "badge": cast(_StrategyFactory, BadgeLike),
    "relabel_or_new": cast(_StrategyFactory, RelabelOrNew),
}


def available_strategies() -> list[str]:
    """Registered strategy names."""
    return sorted(_REGISTRY)


def get_strategy(name: str, **options: Any) -> AcquisitionStrategy:
    """Instantiate a registered strategy with its options.

    Examples
    --------
    >>> get_strategy("uncertainty", measure="margin").name
    'uncertainty'

    Raises
    ------
    KeyError
        For an unknown name.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown acquisition strategy {name!r}; known: {available_strategies()}"
        ) from None
    return factory(**options)
