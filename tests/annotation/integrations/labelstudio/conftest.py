"""Label Studio tests. The ``labelstudio`` ones need a running Label Studio (see
``scripts/labelstudio_service.sh``) named by ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_TOKEN``."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here until pyproject.toml lists it (the suite runs with --strict-markers).
    config.addinivalue_line(
        "markers", "labelstudio: talks to a real Label Studio at $LABEL_STUDIO_URL"
    )


@pytest.fixture
def ls_server() -> tuple[str, str]:
    url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_TOKEN")
    if not url or not token:
        pytest.skip("set LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN (scripts/labelstudio_service.sh)")
    return url, token
