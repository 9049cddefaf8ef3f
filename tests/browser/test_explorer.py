"""The clip explorer in a real browser: a reviewer filters to a genre, checks rows, sends them for a
blind relabel, and the relabel tasks exist; a row opens the clip's page with the annotator's player.
Saves ``console-explorer.png`` (``REFRAIN_SCREENSHOTS_DIR``, as the other browser tests do)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import Task
from quality.models import ClipSummary
from quality.services.consensus import consensus_recompute_project
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from quality.services.summary import clip_summaries_refresh
from tests.browser.pages import PASSWORD, SHOTS, login
from tests.quality.builders import LEAVES, annotate, make_model, make_world, truth_probs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_filter_check_and_send_for_relabel(browser, live_server, settings, tmp_path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    base = live_server.url
    world = make_world(n_clips=42, name="Explorer demo")
    for i in (1, 8, 15):
        other = LEAVES[(LEAVES.index(world.truth[i]) + 1) % len(LEAVES)]
        annotate(world, world.clips[i], other, user=world.users["ann2"])
    for i in (2, 9):
        annotate(world, world.clips[i], world.truth[i], user=world.users["ann3"])
    rng = np.random.default_rng(3)
    probs = truth_probs(world, hi=0.9) * rng.uniform(0.7, 1.0, (len(world.clips), 1))
    make_model(world, probs)
    run = quality_run_detect(project=world.project, budget=len(world.clips))
    issues_route(run=run, budget=3)
    consensus_recompute_project(project=world.project)
    clip_summaries_refresh(project=world.project)
    reviewer = world.users["reviewer"]
    reviewer.set_password(PASSWORD)
    reviewer.save()

    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    login(page, base, reviewer.username)

    page.goto(f"{base}/p/{world.project.slug}/explore/")
    assert "1–42 of 42" in page.text_content("#match-count").replace("\u2009", "")
    # Filter to the Rock branch (with its descendants) and sort by quality, worst first.
    rock = world.index.lookup("Rock")
    page.select_option("#f-node", rock.key)
    page.click("#apply-filters")
    page.wait_for_url(f"**/explore/?node={rock.key.replace('/', '%2F')}*")
    rock_clips = set(
        ClipSummary.objects.filter(
            project=world.project, label_node_ids__contains=f" {rock.pk} "
        ).values_list("clip_id", flat=True)
    )
    shown = {
        int(x)
        for x in page.eval_on_selector_all(
            "#explorer tbody tr", "rs => rs.map(r => r.dataset.clip)"
        )
    }
    assert shown == rock_clips and len(shown) >= 10
    page.click("#explorer thead a[data-sort=quality]")
    page.wait_for_url("**sort=quality*")
    assert f"node={rock.key.replace('/', '%2F')}" in page.url  # the filter survives the sort

    # Check three rows and send them for a blind relabel.
    checks = page.query_selector_all("input.row-check")
    chosen = [int(c.get_attribute("value")) for c in checks[:3]]
    for c in checks[:3]:
        c.check()
    assert page.text_content("#bulk-scope option[value=selected]") == "checked rows (3)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-explorer.png"), full_page=True)
    page.click("#bulk-relabel")
    page.wait_for_selector("ul.messages li")
    assert "3 relabel task(s) queued" in page.text_content("ul.messages")
    assert "sort=quality" in page.url and "node=" in page.url  # back on the same filter
    tasks = Task.objects.filter(project=world.project, reason="requested")
    assert sorted(tasks.values_list("clip_id", flat=True)) == sorted(chosen)
    assert all(t.kind == Task.Kind.RELABEL and t.status == Task.Status.OPEN for t in tasks)

    # Again: the same tasks, nothing new.
    for c in page.query_selector_all("input.row-check")[:3]:
        c.check()
    page.click("#bulk-relabel")
    page.wait_for_selector("ul.messages li")
    assert "0 relabel task(s) queued, 3 already queued" in page.text_content("ul.messages")
    assert tasks.count() == 3

    # A row opens the clip's page, which has the annotator's waveform/spectrogram player.
    page.click(f'#explorer tbody tr[data-clip="{chosen[0]}"] td.label')
    page.wait_for_url(f"**/quality/clips/{chosen[0]}/")
    assert page.is_visible("#wave") and page.is_visible("#spec") and page.is_visible("#play")
    assert page.evaluate("typeof window.Player") == "function"
    assert not errors, errors
    assert not outside, outside
