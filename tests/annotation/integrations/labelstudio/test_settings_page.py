"""The project's Label Studio settings page: link (idempotent, errors as form errors, nothing
created on failure), the link's state without its token, and its queued jobs; bad input is a 4xx
with nothing changed. The live link through this page is in test_labelstudio_settings_live.py."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.integrations.labelstudio.tasks import ls_pull_link, ls_push_link
from annotation.models import LabelStudioLink, LabelStudioTask, Membership
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

DOWN = "http://127.0.0.1:9"  # nothing listens: Label Studio is down


def _admin(client: Any, project: Any, role: str = Membership.Role.ADMIN) -> None:
    user = UserFactory()
    MembershipFactory(project=project, user=user, role=role)
    client.force_login(user)


def _link(project: Any, **kw: Any) -> LabelStudioLink:
    return LabelStudioLink.objects.create(
        project=project,
        base_url=kw.pop("base_url", DOWN),
        ls_project_id=kw.pop("ls_project_id", 12),
        api_key="secret-token-abcdef",
        webhook_secret="s3cret",
        taxonomy_version=project.taxonomy_version,
        **kw,
    )


def test_only_admins_see_it(client) -> None:
    project = ProjectFactory()
    url = f"/p/{project.slug}/settings/labelstudio/"
    _admin(client, project, Membership.Role.REVIEWER)
    assert client.get(url).status_code == 403
    client.force_login(UserFactory())
    assert client.get(url).status_code == 404
    _admin(client, project)
    page = client.get(url)
    assert page.status_code == 200 and b"Link to Label Studio" in page.content


def test_a_label_studio_that_is_down_is_a_form_error_and_nothing_is_linked(client) -> None:
    project = ProjectFactory()
    _admin(client, project)
    url = f"/p/{project.slug}/settings/labelstudio/"
    page = client.post(url, {"form": "link", "url": DOWN, "token": "t" * 40})
    assert page.status_code == 200
    assert b"unreachable" in page.content.lower()
    assert not LabelStudioLink.objects.filter(project=project).exists()
    bad = client.post(url, {"form": "link", "url": "not a url", "token": ""})
    assert bad.status_code == 200 and b"Enter a valid URL" in bad.content
    assert b"This field is required" in bad.content
    assert not LabelStudioLink.objects.filter(project=project).exists()


def test_the_link_s_state_is_shown_without_its_token(client) -> None:
    project = ProjectFactory()
    link = _link(project, ls_webhook_id=5, refrain_url="https://refrain.example")
    clips = [ClipFactory(project=project) for _ in range(3)]
    LabelStudioTask.objects.create(link=link, clip=clips[0], ls_task_id=100)
    link.users.create(ls_user_id=3, email="ann@ls.example")
    _admin(client, project)
    html = client.get(f"/p/{project.slug}/settings/labelstudio/").content.decode()
    assert f"{DOWN}/projects/12" in html
    assert "2</strong> ready clips not pushed yet" in html
    assert "registered (id 5)" in html and "1 (id → email" in html
    assert "secret-token" not in html and "s3cret" not in html


def test_jobs_are_queued_and_an_unreachable_label_studio_is_their_answer(
    client, eager_celery, django_capture_on_commit_callbacks
) -> None:
    project = ProjectFactory()
    link = _link(project)
    ClipFactory(project=project)
    _admin(client, project)
    url = f"/p/{project.slug}/settings/labelstudio/"
    for action in ("push", "pull", "update-config", "second-opinions"):
        with django_capture_on_commit_callbacks(execute=True):
            r = client.post(url, {"link": link.pk, "action": action})
        assert r.status_code == 302, (action, r.content[:300])
        follow = client.get(url).content.decode()
        assert "Queued for a worker" in follow, action
    # What the worker answers with Label Studio down: the reason, nothing stored.
    assert "unreachable" in ls_push_link(link.pk)["error"]
    assert "unreachable" in ls_pull_link(link.pk)["error"]
    assert not LabelStudioTask.objects.filter(link=link).exists()


def test_bad_actions_are_refused_and_change_nothing(client) -> None:
    project, other = ProjectFactory(), ProjectFactory()
    mine, theirs = _link(project), _link(other, ls_project_id=13)
    _admin(client, project)
    url = f"/p/{project.slug}/settings/labelstudio/"
    assert client.post(url, {"link": theirs.pk, "action": "pull"}).status_code == 404
    assert client.post(url, {"link": "x", "action": "pull"}).status_code == 404
    r = client.post(url, {"link": mine.pk, "action": "drop-everything"})
    assert r.status_code == 400 and b"unknown action" in r.content
    theirs.refresh_from_db()
    assert theirs.last_pulled_at is None
