"""Label Studio's own exports of a project (JSON, JSON_MIN, CSV, as its export API writes them) read
offline store the same annotations as the live pull of that project, and each other's rerun and a
later pull store nothing twice (issue 15)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from annotation.integrations.labelstudio.services import (
    ls_client,
    ls_import_export_file,
    ls_project_link,
    ls_pull_annotations,
    ls_push_tasks,
)
from annotation.models import Annotation, LabelStudioTask, Membership
from tests.annotation.integrations.labelstudio.conftest import LsUser, stored_annotations
from tests.factories import (
    ClipFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
    make_taxonomy_version,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db]

PATHS = ("Rock/Punk", "Rock/Metal", "Jazz/Bebop", "Electronic/House")


def _result(*paths: str) -> list[dict[str, Any]]:
    value = {"taxonomy": [p.split("/") for p in paths]}
    return [{"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": value}]


def _export(url: str, token: str, project_id: int, fmt: str) -> str:
    r = httpx.get(
        f"{url}/api/projects/{project_id}/export",
        params={"exportType": fmt, "download_all_tasks": "true"},
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    assert r.status_code == 200, (fmt, r.status_code, r.text[:300])
    return r.text


def test_exports_read_offline_match_the_live_pull(
    ls_server: tuple[str, str], ls_user_make: Callable[[str], LsUser]
) -> None:
    url, token = ls_server
    project = ProjectFactory(
        name=f"Refrain LS export {uuid.uuid4().hex[:8]}",
        taxonomy_version=make_taxonomy_version(PATHS),
        overlap=2,
    )
    a, b = ls_user_make("exp-a"), ls_user_make("exp-b")
    for who in (a, b):
        MembershipFactory(
            project=project,
            user=UserFactory(username=who.email, email=who.email),
            role=Membership.Role.ANNOTATOR,
        )
    link = ls_project_link(project=project, base_url=url, api_key=token)
    try:
        clips = [ClipFactory(project=project) for _ in range(4)]
        assert ls_push_tasks(link=link, clips=clips).created == 4
        task_of = dict(
            LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id")
        )
        as_a = ls_client(base_url=url, api_key=a.token)
        as_b = ls_client(base_url=url, api_key=b.token)
        answers = (["Rock/Punk"], ["Jazz/Bebop"], ["Rock/Metal"])
        for clip, paths in zip(clips[:3], answers, strict=True):
            as_a.annotations.create(id=task_of[clip.id], result=_result(*paths))
        as_b.annotations.create(
            id=task_of[clips[0].id], result=_result("Rock/Metal", "Electronic/House")
        )
        as_b.annotations.create(id=task_of[clips[3].id], result=_result("Jazz"))

        pulled = ls_pull_annotations(link=link)
        assert pulled.errors == [] and pulled.created == 5
        live = stored_annotations(link)
        assert {s for _, s, _ in live} == {f"labelstudio:{a.email}", f"labelstudio:{b.email}"}

        for fmt in ("JSON", "JSON_MIN", "CSV"):
            text = _export(url, token, link.ls_project_id, fmt)
            Annotation.objects.filter(clip__project=project).delete()
            first = ls_import_export_file(link=link, text=text, filename=f"export.{fmt.lower()}")
            assert first.errors == [] and first.created == 5, (fmt, first)
            assert stored_annotations(link) == live, fmt
            again = ls_import_export_file(link=link, text=text, filename=f"export.{fmt.lower()}")
            assert (again.created, again.existing) == (0, 5), (fmt, again)
            # A pull after the offline import finds everything stored already.
            assert ls_pull_annotations(link=link).created == 0, fmt
            assert Annotation.objects.filter(clip__project=project).count() == 5, fmt
    finally:
        ls_client(base_url=url, api_key=token).projects.delete(id=link.ls_project_id)
