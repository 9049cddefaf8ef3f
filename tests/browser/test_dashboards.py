"""The console's dashboards in a real browser on a demo-like project: every page draws its plotly
figures with the expected traces (read back from the DOM's graph divs), loads nothing from another
origin and throws no script error; a click on a genre of the sunburst opens the clip explorer on
it. Saves ``console-<page>.png`` screenshots (``REFRAIN_SCREENSHOTS_DIR=docs/screenshots``
refreshes the docs, as the annotator test does)."""

from __future__ import annotations

import pytest

from quality.dashboards.snapshots import dashboards_refresh
from tests.browser.pages import PASSWORD, SHOTS, login
from tests.quality.builders import make_console_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


#: page -> {figure div id: trace names that must be drawn in it}
EXPECTED: dict[str, dict[str, set[str]]] = {
    "progress": {
        "fig-progress": {"clips labelled", "clips with ≥ 2 opinions", "relabel tasks open"},
        "fig-queue": {"label", "relabel"},
        "fig-per-annotator": set(),  # one per annotator: checked by count below
    },
    "taxonomy": {"fig-sunburst": set()},
    "annotators": {
        "fig-agreement": set(),
        "fig-quality": {"agreement with consensus", "CROWDLAB quality"},
        "fig-throughput": {"annotations / day"},
    },
    "issues": {
        "fig-by-type": {"wrong_sibling", "wrong_branch"},
        "fig-by-depth": {"depth 0", "depth 1"},
        "fig-nodes": {"all issues", "still live"},
        "fig-outcomes": {"confirmed", "rejected", "tie", "precision (people)"},
    },
    "models": {
        "fig-metrics": {"hier_f1", "leaf_accuracy", "macro F1 depth 1"},
        "fig-confusion": set(),
        "fig-near-chance": set(),
    },
    "learning": {
        "fig-curve": {
            "project · initial labels",
            "project · diversity",
            "project · uncertainty",
        }
    },
}
URLS = {
    "progress": "dashboards/",
    "taxonomy": "dashboards/taxonomy/",
    "annotators": "dashboards/annotators/",
    "issues": "dashboards/issues/",
    "models": "dashboards/models/?level=1",
    "learning": "dashboards/learning/",
}


def test_every_dashboard_draws_its_figures(browser, live_server, settings, tmp_path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    world = make_console_project(name="Console demo")
    admin = world.users["admin"]
    admin.set_password(PASSWORD)
    admin.save()
    dashboards_refresh(project=world.project)
    base, slug = live_server.url, world.project.slug

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    login(page, base, admin.username)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, figs in EXPECTED.items():
        page.goto(f"{base}/p/{slug}/{URLS[name]}")
        for div_id, traces in figs.items():
            page.wait_for_selector(f"#{div_id} .main-svg", timeout=15000)
            drawn = page.evaluate(
                f"document.getElementById('{div_id}').data.map(t => t.name || t.type)"
            )
            assert drawn, f"{name}: {div_id} has no trace"
            assert traces <= set(drawn), f"{name}: {div_id} drew {drawn}"
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)

        if name == "annotators":
            names = page.evaluate("document.getElementById('fig-agreement').data[0].x")
            assert sorted(names) == sorted(
                world.users[n].username for n in ("ann1", "ann2", "ann3")
            )
        if name == "progress":
            per_user = page.evaluate("document.getElementById('fig-per-annotator').data[0].y")
            assert len(per_user) == 3
            assert "ETA for the open queue" in page.text_content("#progress-stats")
        if name == "taxonomy":
            ids = page.evaluate("document.getElementById('fig-sunburst').data[0].ids")
            assert {"Rock", "Rock/Punk", "Jazz/Bebop"} <= set(ids)
            # A click on a genre opens the explorer on it (its page is another helper's: the
            # URL is what this page promises).
            page.locator("#fig-sunburst g.slice", has_text="Bebop").first.click()
            page.wait_for_url(f"{base}/p/{slug}/explore/?node=Jazz%2FBebop", timeout=10000)
    # The label-quality dashboard that was there before, in the console's style.
    page.goto(f"{base}/p/{slug}/quality/")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")
    page.screenshot(path=str(SHOTS / "console-label-quality.png"), full_page=True)
    assert not errors, errors
    assert not outside, outside
