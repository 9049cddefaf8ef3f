"""Every page route, GET and POST with junk form data, as an anonymous visitor and as a project
admin: never a 500 (the API has its own check in ``test_api_fuzz``)."""

from __future__ import annotations

import itertools
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

JUNK_FORMS = [
    {},
    {"labels": ["Nope/Never", ""], "decision": "maybe", "overlap": "-3", "lease_seconds": "x"},
    {"name": "", "taxonomy_version": "abc", "file": "not a file", "role": "emperor", "user": "?"},
    {"crontab": "* * *", "page": "-1", "node": "%00", "type": "<script>", "depth": "deep"},
]


def _patterns(resolver: URLResolver, prefix: str = "") -> list[str]:
    out: list[str] = []
    for p in resolver.url_patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            if route.startswith(("admin/", "api/")):
                continue  # Django's admin; the API has its own test
            out += _patterns(p, route)
        elif isinstance(p, URLPattern):
            out.append(route)
    return out


ROUTES = sorted(set(_patterns(get_resolver())))


@pytest.fixture
def clients(team) -> list[Client]:
    logged = Client()
    logged.force_login(team["admin"])
    return [Client(), logged]


@pytest.mark.parametrize("route", ROUTES)
def test_pages_never_500_on_junk(team, clients: list[Client], route: str) -> None:
    from tests.factories import ClipFactory

    clip = ClipFactory(project=team["project"])
    slugs = [team["project"].slug, "no-such-project"]
    ints = [str(clip.pk), "0", "99999999999"]
    for client, slug, num in itertools.product(clients, slugs, ints):
        url = "/" + re.sub(r"<int:\w+>", num, re.sub(r"<slug:\w+>", slug, route))
        url = re.sub(r"<\w+:\w+>|<\w+>", "x", url).replace("^", "").replace("$", "")
        responses = [client.get(url)] + [client.post(url, form) for form in JUNK_FORMS]
        for response in responses:
            assert response.status_code < 500, (url, response.status_code)
