"""The Label Studio config follows the project's taxonomy version: a version change queues one
update per link, and a link already on the version changes nothing. The Label Studio side (the
update, the diff, a refused mismatch) is in tests/active_learning/.../test_ml_backend_live.py."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.integrations.labelstudio import tasks as ls_tasks
from annotation.integrations.labelstudio.services import ls_config_update
from annotation.models import LabelStudioLink
from annotation.services.projects import project_update_policy
from tests.factories import ProjectFactory, make_taxonomy_version

pytestmark = pytest.mark.django_db


def _link(project: Any, ls_project_id: int) -> LabelStudioLink:
    return LabelStudioLink.objects.create(
        project=project,
        base_url="http://127.0.0.1:9",  # nothing listens: a call to Label Studio would fail
        ls_project_id=ls_project_id,
        api_key="token",
        webhook_secret="s3cret",
        taxonomy_version=project.taxonomy_version,
    )


def test_a_new_taxonomy_version_queues_one_config_update_per_link(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    v1 = make_taxonomy_version(("Rock/Punk", "Jazz/Bebop"), name="Tree")
    project = ProjectFactory(taxonomy_version=v1)
    links = [_link(project, 1), _link(project, 2)]
    _link(ProjectFactory(), 3)  # another project's link
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ls_tasks.ls_update_config, "delay", lambda *a: sent.append(a))
    v2 = make_taxonomy_version(("Rock/Punk", "Jazz/Bebop", "Jazz/Cool"), name="Tree", number=2)
    with django_capture_on_commit_callbacks(execute=True):
        project_update_policy(project=project, overlap=2)  # no version change: nothing queued
        assert sent == []
        project_update_policy(project=project, taxonomy_version=v2)
        assert sent == []  # only once the change commits
    assert sorted(sent) == sorted((link.id,) for link in links)


def test_a_link_already_on_the_version_changes_nothing() -> None:
    project = ProjectFactory()
    update = ls_config_update(link=_link(project, 1))  # Label Studio is never called
    assert not update.changed
    assert "nothing to update" in update.summary()


def test_the_task_reports_an_unreachable_label_studio_and_keeps_the_link() -> None:
    v1 = make_taxonomy_version(("Rock/Punk",), name="Tree B")
    project = ProjectFactory(taxonomy_version=v1)
    link = _link(project, 1)
    project.taxonomy_version = make_taxonomy_version(
        ("Rock/Punk", "Rock/Ska"), name="Tree B", number=2
    )
    project.save(update_fields=["taxonomy_version"])
    out = ls_tasks.ls_update_config.run(link.id)
    assert "unreachable" in out["error"]
    link.refresh_from_db()
    assert link.taxonomy_version_id == v1.id
