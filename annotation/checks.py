"""System checks for deployment (``manage.py check --deploy``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register(Tags.security, deploy=True)
def check_throttle_cache_is_shared(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Throttle counters in a per-process cache let an attacker multiply the limits by the number of
    web processes (and a dummy cache turns throttling off)."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend in LOCAL_CACHES:
        return [
            Warning(
                f"The default cache is {backend.rsplit('.', 1)[-1]}: sign-in and token throttles "
                "are not shared between processes.",
                hint="Set CACHE_URL=redis://host:6379/1 (see docs/deployment.md).",
                id="refrain.W001",
            )
        ]
    return []
