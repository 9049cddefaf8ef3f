"""Blind mode is a promise to the people who label: nothing an annotator receives may identify the
clip's labels, who else labelled it, or why it came back.

The clip below carries every kind of hint a real import brings (a file name naming the genre, a
manifest name, metadata columns, an import label, a colleague's label, a detection reason with a
suggested label). The annotator then calls every API route the schema lists and opens every page
they can reach; no response body or header may carry one of those hints.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import Annotation, Task, TaxonomyImportJob
from annotation.selectors import taxonomy_index_cached
from annotation.services.annotations import annotation_create, labels_resolve
from quality.models import QualityCycle
from refrain.api import api
from tests.factories import ClipFactory

pytestmark = pytest.mark.django_db

# Strings that only the hints contain: none may reach the annotator.
SENTINELS = (
    "Rock_Punk_0001",  # file name and external id
    "punk_batch",  # manifest / import source
    "Sekrit",  # a metadata column
    "ann2",  # a colleague who labelled the clip
    "wrong_sibling",  # why detection sent it back
    "label_issue",
    "import:",  # the source of the import label
)


@pytest.fixture
def hinted(team: dict[str, Any]) -> dict[str, Any]:
    project = team["project"]
    project.blind = True
    project.save(update_fields=["blind"])
    clip = ClipFactory(
        project=project,
        external_id="Rock_Punk_0001",
        original_name="Rock_Punk_0001.ogg",
        storage_key="/nonexistent/imports/Rock_Punk_0001.ogg",
        import_source="punk_batch.csv",
        metadata={"title": "Sekrit anthem", "genre": "Punk", "composer": "Sekrit Band"},
    )
    index = taxonomy_index_cached(project.taxonomy_version)
    punk = labels_resolve(index=index, labels=["Rock/Punk"])
    annotation_create(
        clip=clip,
        index=index,
        explicit_node_ids=punk,
        source="import:punk_batch.csv",
        kind=Annotation.Kind.IMPORT,
    )
    annotation_create(
        clip=clip,
        index=index,
        explicit_node_ids=punk,
        source="user:ann2",
        user=team["ann2"],
        note="Sekrit: clearly punk",
    )
    task = Task.objects.create(
        project=project,
        clip=clip,
        kind=Task.Kind.RELABEL,
        priority=5.0,
        reason="label_issue:wrong_sibling",
        reason_detail={"suggested": ["Rock/Metal"], "given": ["Rock/Punk"], "by": "ann2"},
        dedupe_key=f"label_issue:{clip.pk}",
    )
    cycle = QualityCycle.objects.create(
        project=project, status="done", results={"route": {"routed": 1}}
    )
    job = TaxonomyImportJob.objects.create(name="Punk genres", data=b"", created_by=team["admin"])
    return {"project": project, "clip": clip, "task": task, "cycle": cycle, "job": job}


def _assert_clean(where: str, response: Any) -> None:
    text = response.content.decode("utf-8", "replace") if not response.streaming else ""
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    for sentinel in SENTINELS:
        assert sentinel not in text, f"{where}: body reveals {sentinel!r}"
        assert sentinel not in headers, f"{where}: headers reveal {sentinel!r}"


def _get_routes() -> list[str]:
    schema = api.get_openapi_schema()
    return sorted(path for path, ops in schema["paths"].items() if "get" in ops)


def test_the_annotator_receives_no_hint(team: dict[str, Any], hinted: dict[str, Any]) -> None:
    client = Client()
    client.force_login(team["ann"])
    project, clip, task = hinted["project"], hinted["clip"], hinted["task"]

    taken = client.post(f"/api/v1/projects/{project.pk}/tasks/next")
    assert taken.status_code == 200, taken.content
    body = taken.json()
    assert body["task_id"] == task.pk, "the relabel task should be the one handed out"
    assert body["clip"]["name"] == f"Clip {clip.pk}"
    assert body["reason"] == "second_opinion"
    assert body["others"] is None
    _assert_clean("POST tasks/next", taken)

    ids = {
        "project_id": project.pk,
        "clip_id": clip.pk,
        "task_id": task.pk,
        "version_id": project.taxonomy_version_id,
        "cycle_id": hinted["cycle"].pk,
        "job_id": hinted["job"].pk,
        "annotation_id": Annotation.objects.filter(clip=clip).order_by("id").first().pk,
    }
    reached = []
    for route in _get_routes():
        names = re.findall(r"{(\w+)}", route)
        if any(n not in ids for n in names):
            pytest.fail(f"{route}: add its path parameters to this test's ids")
        url = re.sub(r"{(\w+)}", lambda m: str(ids[m.group(1)]), route)
        response = client.get(url)
        assert response.status_code < 500, (url, response.content[:300])
        _assert_clean(f"GET {url}", response)
        if response.status_code == 200:
            reached.append(route)
    # The check means something only if the annotator's own routes answered.
    assert "/api/v1/projects/{project_id}" in reached
    assert "/api/v1/clips/{clip_id}" in reached

    for name, kwargs in [
        ("home", {}),
        ("annotate", {"slug": project.slug}),
        ("review-list", {"slug": project.slug}),
        ("quality-dashboard", {"slug": project.slug}),
        ("quality-issues", {"slug": project.slug}),
        ("quality-clip", {"slug": project.slug, "clip_id": clip.pk}),
        ("quality-explore", {"slug": project.slug}),
        ("review-clip", {"slug": project.slug, "clip_id": clip.pk}),
        ("project-models", {"slug": project.slug}),
        ("quality-jobs", {"slug": project.slug}),
        ("quality-jobs-rows", {"slug": project.slug}),
        *(
            (f"dashboards-{page}", {"slug": project.slug})
            for page in ("progress", "taxonomy", "annotators", "issues", "models", "learning")
        ),
    ]:
        url = reverse(name, kwargs=kwargs)
        response = client.get(url)
        assert response.status_code < 500, (url, response.content[:300])
        _assert_clean(f"page {url}", response)


def test_an_annotator_never_reads_a_colleagues_annotations(
    team: dict[str, Any], hinted: dict[str, Any]
) -> None:
    client = Client()
    client.force_login(team["ann"])
    clip = hinted["clip"]
    response = client.get(f"/api/v1/clips/{clip.pk}/annotations")
    if response.status_code == 200:
        assert response.json() == [], "an annotator sees only their own annotations"
    else:
        assert response.status_code in (403, 404)
    listed = client.get(f"/api/v1/projects/{hinted['project'].pk}/annotations")
    if listed.status_code == 200:
        assert all(a["clip_id"] != clip.pk for a in listed.json())
