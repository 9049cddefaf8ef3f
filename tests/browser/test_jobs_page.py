"""The jobs page in a real browser: its progress bar moves while the page stays open, an admin
cancels a running extraction and retries it; the dashboard loads plotly.js from the server itself
and nothing from another origin. Saves a screenshot of the jobs page (``REFRAIN_SCREENSHOTS_DIR``,
as the annotator test does)."""

from __future__ import annotations

import pytest

from active_learning.models import FeatureSet, JobStatus
from annotation.models import Membership
from tests.browser.pages import SHOTS, login
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_jobs_page_moves_and_an_admin_cancels_and_retries(browser, live_server, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    base = live_server.url
    project = ProjectFactory(name="Live jobs")
    MembershipFactory(
        project=project, user=UserFactory(username="boss"), role=Membership.Role.ADMIN
    )
    fs = FeatureSet.objects.create(
        project=project,
        backend="logmel-stats",
        status=JobStatus.RUNNING,
        n_clips=40,
        n_done=4,
        worker="cpu-1@box",
        worker_pid=7,
    )

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    page.on("dialog", lambda d: d.accept())
    login(page, base, "boss")

    page.goto(f"{base}/p/{project.slug}/quality/")
    assert page.evaluate("typeof window.Plotly") == "object"

    page.goto(f"{base}/p/{project.slug}/jobs/")
    bar = f'tr[data-id="{fs.pk}"].job-features progress'
    assert page.get_attribute(bar, "value") == "4"
    page.evaluate("window.__sameDocument = true")
    FeatureSet.objects.filter(pk=fs.pk).update(n_done=30)  # the worker embeds 26 more clips
    page.wait_for_function(
        f"document.querySelector('{bar}').getAttribute('value') === '30'", timeout=15000
    )
    assert page.evaluate("window.__sameDocument") is True  # no reload
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "jobs.png"), full_page=True)

    row = f'tr[data-id="{fs.pk}"].job-features'
    page.click(f"{row} form.job-action button:has-text('Cancel')")
    page.wait_for_selector(f'{row}[data-status="failed"]', timeout=15000)
    assert "cancelled by boss" in page.text_content(row)
    assert "features " + str(fs.pk) + ": failed." in page.text_content("#jobs-status")
    fs.refresh_from_db()
    assert fs.status == JobStatus.FAILED

    page.click(f"{row} form.job-action button:has-text('Retry')")
    page.wait_for_selector(f'{row}[data-status="queued"]', timeout=15000)
    fs.refresh_from_db()
    assert fs.status == JobStatus.QUEUED and fs.sweep_notes[-1]["action"] == "retried"
    assert not errors, errors
    assert not outside, outside
