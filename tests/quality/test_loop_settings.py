"""The "Model & loop" settings page: project admins edit what the cycle trains on, routes and
acquires and when it runs; a setting that cannot work is refused with the reason and nothing is
saved (schedule included)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from active_learning.models import LoopPolicy
from quality.services.schedule import cycle_schedule_name

pytestmark = pytest.mark.django_db

GOOD = {
    "embedding_backend": "logmel-stats+structure-stats",
    "model_kind": "flat",
    "retrain_every": "40",
    "schedule": "0 3 * * *",
    "relabel_budget": "12",
    "acquisition_strategy": "relabel_or_new",
    "acquisition_batch_size": "25",
    "acquisition_relabel_share": "0.5",
}


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_admins_save_every_setting_and_the_schedule(team) -> None:
    project = team["project"]
    url = reverse("quality-loop-settings", args=[project.slug])
    admin = _client(team["admin"])
    page = admin.get(url)
    assert page.status_code == 200 and b'id="loop-settings"' in page.content
    response = admin.post(url, GOOD, follow=True)
    assert b"Loop settings saved." in response.content
    policy = LoopPolicy.objects.get(project=project)
    assert policy.embedding_backend == "logmel-stats+structure-stats"
    assert (policy.model_kind, policy.retrain_every, policy.relabel_budget) == ("flat", 40, 12)
    assert (policy.acquisition_batch_size, policy.acquisition_relabel_share) == (25, 0.5)
    task = PeriodicTask.objects.get(name=cycle_schedule_name(project))
    assert task.crontab is not None and task.crontab.hour == "3" and task.enabled
    assert admin.get(url).context["form"].initial["schedule"] == "0 3 * * *"
    # Every hour by interval, then no schedule at all.
    admin.post(url, {**GOOD, "schedule": "3600"})
    assert admin.get(url).context["form"].initial["schedule"] == "3600"
    admin.post(url, {**GOOD, "schedule": ""})
    assert not PeriodicTask.objects.filter(name=cycle_schedule_name(project)).exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embedding_backend", "logmel-stats+nope", "unknown embedding backend"),
        ("embedding_backend", "/no/such/model.pt2", "model file that exists"),
        ("schedule", "99 * * * *", "Invalid end range"),
        ("schedule", "0 3 *", "five fields"),
        ("acquisition_relabel_share", "1.5", "less than or equal to 1"),
        ("model_kind", "svm", "Select a valid choice"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_and_nothing_saved(
    team, field: str, value: str, message: str
) -> None:
    project = team["project"]
    policy = project.loop_policy
    before = (policy.embedding_backend, policy.model_kind, policy.retrain_every)
    url = reverse("quality-loop-settings", args=[project.slug])
    response = _client(team["admin"]).post(url, {**GOOD, field: value})
    assert response.status_code == 200 and message in response.content.decode()
    policy.refresh_from_db()
    assert (policy.embedding_backend, policy.model_kind, policy.retrain_every) == before
    assert not PeriodicTask.objects.filter(name=cycle_schedule_name(project)).exists()


def test_only_project_admins_reach_the_page(team) -> None:
    url = reverse("quality-loop-settings", args=[team["project"].slug])
    assert _client(team["reviewer"]).get(url).status_code == 403
    assert _client(team["reviewer"]).post(url, GOOD).status_code == 403
    assert _client(team["outsider"]).get(url).status_code == 404
