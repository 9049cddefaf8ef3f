"""An incremental pull against a real Label Studio lists only the tasks changed since the previous
clean pull (Label Studio's ``updated_at``), so an unchanged re-pull reads nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from annotation.integrations.labelstudio import services
from annotation.integrations.labelstudio.services import (
    ls_client,
    ls_project_link,
    ls_pull_annotations,
    ls_push_tasks,
)
from annotation.models import Annotation, LabelStudioTask
from tests.factories import ClipFactory, ProjectFactory, make_taxonomy_version

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db]


def ls_result(paths: list[list[str]]) -> list[dict[str, Any]]:
    return [
        {"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": {"taxonomy": paths}}
    ]


def test_an_unchanged_re_pull_lists_no_task(
    ls_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = ls_server
    client = ls_client(base_url=url, api_key=token)
    project = ProjectFactory(
        name=f"Refrain LS pull {uuid.uuid4().hex[:8]}",
        taxonomy_version=make_taxonomy_version(("Rock/Punk", "Jazz/Bebop")),
    )
    link = ls_project_link(project=project, base_url=url, api_key=token)
    listed: list[int] = []
    real_list = client.tasks.list

    def counting_list(**kw: Any) -> Any:
        tasks = list(real_list(**kw))
        listed.append(len(tasks))
        return tasks

    monkeypatch.setattr(client.tasks, "list", counting_list)
    monkeypatch.setattr(services, "_client_for", lambda link: client)
    # Both clocks are this machine's: no margin, so the test need not wait minutes.
    monkeypatch.setattr(services, "PULL_CLOCK_MARGIN", services.timedelta(0))
    try:
        clips = ClipFactory.create_batch(3, project=project)
        ls_push_tasks(link=link, clips=clips)
        task_of = dict(
            LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id")
        )
        client.annotations.create(id=task_of[clips[0].id], result=ls_result([["Rock/Punk"]]))
        listed.clear()
        first = ls_pull_annotations(link=link)
        assert (first.created, listed) == (1, [3])  # the first pull lists every task
        time.sleep(1.1)
        client.annotations.create(id=task_of[clips[1].id], result=ls_result([["Jazz/Bebop"]]))
        listed.clear()
        second = ls_pull_annotations(link=link)
        assert (second.created, second.existing, listed) == (1, 1, [1])  # only the changed task
        time.sleep(1.1)
        listed.clear()
        third = ls_pull_annotations(link=link)
        assert (third.created, third.existing, listed) == (0, 2, [0])  # nothing changed
        assert Annotation.objects.filter(clip__project=project).count() == 2
    finally:
        client.projects.delete(id=link.ls_project_id)
