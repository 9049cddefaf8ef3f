"""Front-end files: plotly.js and the app's own files are collected from installed packages and the
source tree, served by WhiteNoise under content-hashed names, compressed and cached for a year; no
page loads anything from another origin (the machines have no internet)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from refrain.vendor_static import VENDORED, VendorFinder

pytestmark = pytest.mark.django_db

MANIFEST = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


def _client(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_the_finder_exposes_only_plotly_from_the_installed_package() -> None:
    finder = VendorFinder()
    assert not finder.check()
    assert finder.find("vendor/plotly.min.js") == str(VENDORED["plotly.min.js"])
    assert finder.find("vendor/plotly.min.js", find_all=True) == [str(VENDORED["plotly.min.js"])]
    # The rest of plotly's package_data (the widget bundle, datasets) is not served.
    assert finder.find("vendor/widgetbundle.js") == ""
    assert finder.find("plotly.min.js") == ""
    listed = [(path, storage.prefix) for path, storage in finder.list(None)]
    assert listed == [("plotly.min.js", "vendor")]


@pytest.fixture
def collected(settings: Any, tmp_path: Path) -> Path:
    """The production configuration: collectstatic into a fresh STATIC_ROOT, manifest storage,
    WhiteNoise serving what was collected (no finders)."""
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = MANIFEST
    settings.WHITENOISE_USE_FINDERS = False
    settings.DEBUG = False
    call_command("collectstatic", interactive=False, verbosity=0)
    return Path(settings.STATIC_ROOT)


def test_the_dashboard_loads_plotly_hashed_gzipped_and_cached_for_a_year(
    team: dict[str, Any], collected: Path
) -> None:
    project = team["project"]
    for page in ("quality-dashboard", "project-models"):
        html = _client(team["reviewer"]).get(reverse(page, args=[project.slug])).content.decode()
        (src,) = re.findall(r'<script src="([^"]*plotly[^"]*)"', html)
        assert re.fullmatch(r"/static/vendor/plotly\.min\.[0-9a-f]{12}\.js", src), src
    assert (collected / src.removeprefix("/static/")).is_file()

    response = Client().get(src, HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert response["Content-Type"].startswith("text/javascript")
    assert "Accept-Encoding" in response["Vary"]
    cache = response["Cache-Control"]
    assert "immutable" in cache and int(re.search(r"max-age=(\d+)", cache)[1]) >= 365 * 86400
    body = b"".join(response.streaming_content)
    full = VENDORED["plotly.min.js"].stat().st_size
    assert len(body) == int(response["Content-Length"]) < full / 2  # compressed

    # A client that cannot decompress gets the plain file; an unhashed name is cached briefly.
    plain = Client().get(src)
    assert "Content-Encoding" not in plain and int(plain["Content-Length"]) == full
    unhashed = Client().get("/static/vendor/plotly.min.js")
    assert unhashed.status_code == 200 and "immutable" not in unhashed["Cache-Control"]


def test_the_app_files_of_a_page_are_hashed_too(team: dict[str, Any], collected: Path) -> None:
    html = _client(team["ann"]).get(reverse("annotate", args=[team["project"].slug])).content
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())
    assert refs
    for ref in refs:
        assert re.search(r"\.[0-9a-f]{12}\.(js|css)$", ref), ref
        assert Client().get(ref).status_code == 200


_EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])"""
    r"""\s*((?:https?:)?//[^"'\s)>]+)""",
    re.IGNORECASE,
)


def test_no_console_page_loads_anything_from_another_origin(tmp_path: Path, settings: Any) -> None:
    from quality.services.consensus import consensus_recompute_project
    from quality.services.detection import quality_run_detect
    from quality.services.routing import issues_route
    from tests.quality.builders import make_model, make_world

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    w = make_world()
    make_model(w)
    run = quality_run_detect(project=w.project, budget=len(w.clips))
    issues_route(run=run, budget=2)
    consensus_recompute_project(project=w.project)
    slug = w.project.slug
    pages = [
        reverse("home"),
        reverse("quality-dashboard", args=[slug]),
        reverse("quality-issues", args=[slug]),
        reverse("quality-clip", args=[slug, w.clips[0].pk]),
        reverse("quality-jobs", args=[slug]),
        reverse("quality-jobs-rows", args=[slug]),
        reverse("quality-loop-settings", args=[slug]),
        reverse("project-models", args=[slug]),
        reverse("review-list", args=[slug]),
        reverse("annotate", args=[slug]),
    ]
    admin = _client(w.users["admin"])
    seen = 0
    for url in pages:
        response = admin.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert not _EXTERNAL.findall(html), (url, _EXTERNAL.findall(html)[:5])
        seen += len(re.findall(r"\b(?:src|href)=", html))
    assert seen > 20
    # The pattern does catch what it is for.
    assert _EXTERNAL.findall('<script src="https://cdn.plot.ly/plotly.js"></script>')
    assert _EXTERNAL.findall("<link href='//fonts.example/x.css'>")
    assert _EXTERNAL.findall("body { background: url(http://example.org/a.png) }")
