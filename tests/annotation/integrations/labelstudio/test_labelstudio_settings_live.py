"""The project's Label Studio settings page against a real Label Studio: linking twice through the
page leaves one LS project and one link; its push job puts every ready clip there once."""

from __future__ import annotations

import uuid

import pytest

from annotation.integrations.labelstudio.services import ls_client
from annotation.models import LabelStudioLink, LabelStudioTask, Membership
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db]


def test_link_twice_and_push_from_the_page(
    client, ls_server: tuple[str, str], eager_celery, django_capture_on_commit_callbacks
) -> None:
    url, token = ls_server
    project = ProjectFactory(name=f"Refrain LS page {uuid.uuid4().hex[:8]}")
    clips = [ClipFactory(project=project) for _ in range(3)]
    admin = UserFactory()
    MembershipFactory(project=project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    page = f"/p/{project.slug}/settings/labelstudio/"
    ls = ls_client(base_url=url, api_key=token)
    before = {p.id for p in ls.projects.list()}
    form = {"form": "link", "url": url, "token": token, "refrain_url": "http://127.0.0.1:9"}
    try:
        for _ in range(2):  # idempotent: the second updates the first
            r = client.post(page, form)
            assert r.status_code == 302, r.content[:500]
        (link,) = LabelStudioLink.objects.filter(project=project)
        assert {p.id for p in ls.projects.list()} - before == {link.ls_project_id}
        shown = client.get(page).content.decode()
        assert f"/projects/{link.ls_project_id}" in shown and "3</strong> ready clips" in shown
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(page, {"link": link.pk, "action": "push"}).status_code == 302
        assert LabelStudioTask.objects.filter(link=link).count() == 3
        held = ls.tasks.list(project=link.ls_project_id)
        assert sorted(t.data["refrain_clip_id"] for t in held) == sorted(c.pk for c in clips)
        with django_capture_on_commit_callbacks(execute=True):  # again: nothing twice
            client.post(page, {"link": link.pk, "action": "push"})
        assert len(list(ls.tasks.list(project=link.ls_project_id))) == 3
    finally:
        for p in {p.id for p in ls.projects.list()} - before:
            ls.projects.delete(id=p)
