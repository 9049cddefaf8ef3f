"""Label Studio tests. The ``labelstudio`` ones need a running Label Studio (see
``scripts/labelstudio_service.sh``, or ``make test-labelstudio``) named by ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_TOKEN``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
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


@dataclass(frozen=True)
class LsUser:
    id: int
    email: str
    token: str


@pytest.fixture
def ls_user_make(ls_server: tuple[str, str]) -> Callable[[str], LsUser]:
    """Sign up a new Label Studio user in the server's organisation, as a person would: through
    the organisation's invite link (Label Studio Community has no API that creates a member with a
    token). Returns the user's id, email and API token."""
    url, token = ls_server

    def make(name: str) -> LsUser:
        invite = httpx.get(
            f"{url}/api/invite", headers={"Authorization": f"Token {token}"}, timeout=30
        )
        invite.raise_for_status()
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.org"
        with httpx.Client(base_url=url, timeout=30) as browser:
            page = invite.json()["invite_url"]
            browser.get(page).raise_for_status()
            signup = browser.post(
                page,
                data={
                    "email": email,
                    "password": f"pw-{uuid.uuid4().hex}",
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
                headers={"Referer": f"{url}{page}"},
            )
            assert signup.status_code == 302, signup.text[-500:]
            user_token = browser.get("/api/current-user/token").json()["token"]
            me = browser.get("/api/current-user/whoami").json()
        return LsUser(id=int(me["id"]), email=email, token=user_token)

    return make


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Tasks run in this process when sent (the broker boundary), as a worker would run them."""
    from refrain.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def stored_annotations(link: object) -> set[tuple[int, str, frozenset[str]]]:
    """(clip, source, explicit label paths) of every annotation in the link's project."""
    from annotation.models import Annotation

    return {
        (
            ann.clip_id,
            ann.source,
            frozenset(lab.node.path for lab in ann.labels.select_related("node") if lab.explicit),
        )
        for ann in Annotation.objects.filter(clip__project=link.project)  # type: ignore[attr-defined]
    }
