"""The relabel loop closed through a real Label Studio, its queue order, and its faults.

Runs against the server named by ``LABEL_STUDIO_URL``/``LABEL_STUDIO_TOKEN`` (``make
test-labelstudio`` starts one). Nothing of Label Studio is mocked; Celery runs its tasks in process
(``task_always_eager``) so that the routing's request and the consensus update after an ingest are
the real task code without a worker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from annotation.integrations.labelstudio.services import (
    WEBHOOK_HEADER,
    LabelStudioSyncError,
    ls_client,
    ls_project_link,
    ls_pull_annotations,
    ls_push_predictions,
    ls_push_tasks,
    ls_relabels_request,
)
from annotation.models import Annotation, LabelStudioLink, LabelStudioTask, Membership, Task
from annotation.selectors import current_labels
from annotation.services.enqueue import LabelIssueFound, task_enqueue
from quality.models import ClipConsensus, LabelIssue
from quality.services.cycle import cycle_run
from tests.annotation.integrations.labelstudio.conftest import LsUser
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.quality.builders import annotate, make_model, make_world, truth_probs

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db]

DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


def ls_result(paths: list[list[str]]) -> list[dict[str, Any]]:
    return [
        {"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": {"taxonomy": paths}}
    ]


def as_path(key: str) -> list[str]:
    """``"Rock/Punk"`` -> ``["Rock", "Rock/Punk"]``: a taxonomy result's path of node keys."""
    parts = key.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def next_task(url: str, user: LsUser, ls_project_id: int) -> dict[str, Any] | None:
    """What Label Studio's labelling stream serves ``user`` next (REST: the SDK has no call)."""
    r = httpx.get(
        f"{url}/api/projects/{ls_project_id}/next/",
        headers={"Authorization": f"Token {user.token}"},
        timeout=30,
    )
    if r.status_code == 404:  # "no more tasks"
        return None
    r.raise_for_status()
    return dict(r.json())


@pytest.fixture
def ls_cleanup(ls_server: tuple[str, str]) -> Iterator[list[int]]:
    """Label Studio project ids to delete after the test."""
    url, token = ls_server
    ids: list[int] = []
    yield ids
    client = ls_client(base_url=url, api_key=token)
    for pid in ids:
        client.projects.delete(id=pid)


def test_next_serves_tasks_in_the_order_of_refrains_scores(
    ls_server: tuple[str, str],
    ls_user_make: Callable[[str], LsUser],
    ls_cleanup: list[int],
) -> None:
    """The link sets uncertainty sampling; with the predictions' model version as the project's,
    Label Studio 1.23 serves the lowest-scored task first (one annotator: strictly in order)."""
    url, token = ls_server
    project = ProjectFactory(name=f"Refrain LS order {uuid.uuid4().hex[:8]}", overlap=1)
    link = ls_project_link(project=project, base_url=url, api_key=token)
    ls_cleanup.append(link.ls_project_id)
    client = ls_client(base_url=url, api_key=token)
    assert client.projects.get(id=link.ls_project_id).sampling == "Uncertainty sampling"
    clips = [ClipFactory(project=project) for _ in range(5)]
    ls_push_tasks(link=link, clips=clips)
    keys = [n.key for n in project.taxonomy_version.nodes.order_by("index")]
    leaf = next(k for k in keys if "/" in k)
    scores = [0.9, 0.3, 0.6, 0.1, 0.5]
    probs = {}
    for clip, score in zip(clips, scores, strict=True):
        p = np.full(len(keys), 0.01)
        p[keys.index(leaf.split("/")[0])], p[keys.index(leaf)] = 0.99, score
        probs[clip.id] = p
    ls_push_predictions(link=link, model_version_id=7, probs_by_clip=probs)
    task_of = dict(LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id"))
    expected = [
        task_of[c.id] for _, c in sorted(zip(scores, clips, strict=True), key=lambda x: x[0])
    ]

    annotator = ls_user_make("order")
    as_annotator = ls_client(base_url=url, api_key=annotator.token)
    served = []
    while (task := next_task(url, annotator, link.ls_project_id)) is not None:
        served.append(task["id"])
        as_annotator.annotations.create(id=task["id"], result=ls_result([as_path(leaf)]))
        assert len(served) <= len(clips)
    assert served == expected


def test_relabel_closes_through_label_studio(
    ls_server: tuple[str, str],
    ls_user_make: Callable[[str], LsUser],
    ls_cleanup: list[int],
    eager_celery: None,
    django_capture_on_commit_callbacks: Any,
    tmp_path: Path,
) -> None:
    """Link, push tasks and predictions, two Label Studio users annotate, pull, a cycle routes a
    suspect, Label Studio reopens it for one more annotator, whose answer closes the issue."""
    url, token = ls_server
    # 24 clips labelled right in Refrain; 4 more labelled in Label Studio, one of them wrong.
    world = make_world(
        n_clips=24,
        planted={},
        name=f"Refrain LS relabel {uuid.uuid4().hex[:8]}",
        loop_policy__relabel_budget=1,
    )
    project = world.project
    ls_clips = [ClipFactory(project=project) for _ in range(4)]
    truth = ["Rock/Punk", "Jazz/Bebop", "Electronic/House", "Rock/Indie"]
    world.clips += ls_clips
    world.truth += truth
    a, b, c = ls_user_make("ann-a"), ls_user_make("ann-b"), ls_user_make("ann-c")
    for who in (a, b, c):  # the same people in Refrain: LS annotations count as theirs
        MembershipFactory(
            project=project,
            user=UserFactory(username=who.email, email=who.email),
            role=Membership.Role.ANNOTATOR,
        )

    link = ls_project_link(project=project, base_url=url, api_key=token)
    ls_cleanup.append(link.ls_project_id)
    assert ls_push_tasks(link=link, clips=ls_clips).created == 4
    # Pre-annotations from an earlier model (its probabilities; no model row yet in this project).
    probs = truth_probs(world)
    row = {clip.id: i for i, clip in enumerate(world.clips)}
    pushed = ls_push_predictions(
        link=link, model_version_id="pre", probs_by_clip={c.id: probs[row[c.id]] for c in ls_clips}
    )
    assert pushed.created == 4
    task_of = dict(LabelStudioTask.objects.filter(link=link).values_list("clip_id", "ls_task_id"))
    t0, t1, t2, t3 = (task_of[c.id] for c in ls_clips)

    # Two Label Studio users annotate through the SDK with their own tokens; A gets clip 0 wrong.
    as_a = ls_client(base_url=url, api_key=a.token)
    as_b = ls_client(base_url=url, api_key=b.token)
    for task_id, key in ((t0, "Rock/Metal"), (t1, truth[1]), (t2, truth[2])):
        as_a.annotations.create(id=task_id, result=ls_result([as_path(key)]))
    for task_id, key in ((t1, truth[1]), (t3, truth[3])):
        as_b.annotations.create(id=task_id, result=ls_result([as_path(key)]))
    with django_capture_on_commit_callbacks(execute=True):
        pulled = ls_pull_annotations(link=link)
    assert (pulled.created, pulled.errors) == (5, [])
    suspect = ls_clips[0]
    assert set(ClipConsensus.objects.get(clip=suspect).node_ids) == world.closed("Rock/Metal")

    def label_that_stands() -> set[int]:
        found = current_labels(project=project, clip_ids=[suspect.id])
        return set(found.node_ids[found.clip_ids.index(suspect.id)])

    assert label_that_stands() == world.closed("Rock/Metal")
    make_model(world)  # the cycle's retrain, out-of-sample over the labels pulled in

    # The cycle's detection flags clip 0; routing reopens its Label Studio task for one more.
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_run(project=project, steps=("detect", "route"))
    assert cycle.results["route"]["routed"] == 1 and cycle.results["route"]["labelstudio"]
    issue = LabelIssue.objects.get(clip=suspect)
    assert issue.status == LabelIssue.Status.ROUTED
    relabel = issue.relabel_task
    assert relabel is not None and relabel.status == Task.Status.OPEN
    client = ls_client(base_url=url, api_key=token)
    reopened = client.tasks.get(str(t0))
    assert (reopened.overlap, reopened.is_labeled) == (2, False)  # A's annotation + one more
    assert [t.id for t in client.tasks.list(project=link.ls_project_id) if not t.is_labeled] == [t0]
    # Routing twice, the reconciliation, or the command for this issue: nothing more is asked.
    assert ls_relabels_request(task_ids=[relabel.pk]) == {"asked": [], "waiting": 1, "errors": []}
    out = StringIO()
    call_command(
        "labelstudio", "second-opinion", str(link.pk), "--issue", str(issue.pk), stdout=out
    )
    assert json.loads(out.getvalue())["asked"] == [
        {
            "clip": suspect.id,
            "ls_task": t0,
            "overlap": 2,
            "relabel_task": relabel.pk,
            "already": True,
        }
    ]
    assert client.tasks.get(str(t0)).overlap == 2

    # A, who labelled it, is not served it again; B is, blind: neither A's annotation nor the
    # model's pre-annotation is in what the labelling stream sends.
    assert next_task(url, a, link.ls_project_id) is None
    served = next_task(url, b, link.ls_project_id)
    assert served is not None and served["id"] == t0
    assert served["annotations"] == [] and served["predictions"] == []
    # Exactly one more: with B holding it, a third annotator gets nothing.
    assert next_task(url, c, link.ls_project_id) is None

    as_b.annotations.create(id=t0, result=ls_result([as_path(truth[0])]))
    with django_capture_on_commit_callbacks(execute=True):
        assert ls_pull_annotations(link=link).created == 1
    answer = Annotation.objects.get(clip=suspect, task=relabel)
    assert answer.kind == Annotation.Kind.RELABEL and answer.user.email == b.email
    relabel.refresh_from_db()
    issue.refresh_from_db()
    assert relabel.status == Task.Status.DONE
    assert issue.status == LabelIssue.Status.CONFIRMED and issue.resolving_annotation == answer
    assert set(issue.resolution_node_ids) == world.closed(truth[0])
    assert set(ClipConsensus.objects.get(clip=suspect).node_ids) == world.closed(truth[0])
    assert label_that_stands() == world.closed(truth[0])
    assert client.tasks.get(str(t0)).is_labeled is True
    assert next_task(url, c, link.ls_project_id) is None
    # Counted on both sides: 6 Label Studio annotations, each stored once in Refrain.
    assert sum(len(client.annotations.list(id=t)) for t in (t0, t1, t2, t3)) == 6
    assert Annotation.objects.filter(clip__in=ls_clips).count() == 6


def test_faults_end_in_clear_errors_with_nothing_lost_or_doubled(
    ls_server: tuple[str, str],
    ls_cleanup: list[int],
    live_server: Any,
    tmp_path: Path,
) -> None:
    url, token = ls_server
    client = ls_client(base_url=url, api_key=token)
    world = make_world(n_clips=3, planted={}, name=f"Refrain LS faults {uuid.uuid4().hex[:8]}")
    project = world.project
    title = project.name

    def ls_projects() -> int:
        return sum(1 for p in client.projects.list() if p.title == title)

    # Label Studio down: the link is refused with the reason, nothing is created on either side.
    with pytest.raises(LabelStudioSyncError, match="unreachable during project creation"):
        ls_project_link(project=project, base_url=DEAD_URL, api_key=token)
    assert LabelStudioLink.objects.filter(project=project).count() == 0

    # A link run twice (service and command): one Label Studio project, one link.
    link = ls_project_link(
        project=project, base_url=url, api_key=token, refrain_url=live_server.url
    )
    ls_cleanup.append(link.ls_project_id)
    again = ls_project_link(project=project, base_url=url, api_key=token)
    call_command("labelstudio", "link", project.slug, "--url", url, "--token", token, stdout=None)
    assert again.pk == link.pk and again.ls_project_id == link.ls_project_id
    assert ls_projects() == 1 and LabelStudioLink.objects.filter(project=project).count() == 1
    assert len(client.webhooks.list(project=link.ls_project_id)) == 1

    assert ls_push_tasks(link=link, clips=world.clips).created == 3
    task_ids = list(LabelStudioTask.objects.filter(link=link).values_list("ls_task_id", flat=True))
    client.annotations.create(id=task_ids[0], result=ls_result([as_path(world.truth[0])]))
    stored_before = Annotation.objects.filter(clip__project=project).count()

    # A webhook without the secret (or with a wrong one) is refused and stores nothing.
    hook = f"{live_server.url}/integrations/label-studio/{link.id}/webhook"
    body = {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 10**9, "result": ls_result([as_path(world.truth[1])])},
        "task": {"id": task_ids[1], "data": {"refrain_clip_id": world.clips[1].id}},
    }
    assert httpx.post(hook, json=body, timeout=10).status_code == 403
    assert httpx.post(hook, json=body, headers={WEBHOOK_HEADER: "x"}, timeout=10).status_code == 403
    assert Annotation.objects.filter(clip__project=project).count() == stored_before

    # Label Studio down for a push, a pull, a second opinion: clear errors; nothing recorded that
    # did not happen, and everything arrives once it is back.
    link.base_url = DEAD_URL
    with pytest.raises(LabelStudioSyncError, match="unreachable"):
        ls_push_tasks(link=link, clips=[ClipFactory(project=project)])
    with pytest.raises(LabelStudioSyncError, match="unreachable during task listing"):
        ls_pull_annotations(link=link)
    link.save(update_fields=["base_url"])
    with pytest.raises(CommandError, match="unreachable"):
        call_command(
            "labelstudio", "second-opinion", str(link.pk), "--clip", str(world.clips[2].id)
        )
    relabel = annotate(world, world.clips[2], world.truth[2], user=world.users["ann2"])
    assert relabel.pk  # (another opinion in Refrain meanwhile, unrelated to Label Studio)
    assert LabelStudioTask.objects.filter(link=link).count() == 3
    link.refresh_from_db()
    assert link.last_pulled_at is None
    link.base_url = url
    link.save(update_fields=["base_url"])
    assert ls_pull_annotations(link=link).created == 1
    assert ls_pull_annotations(link=link).created == 0
    # Counted on both sides: 3 tasks and 1 annotation in Label Studio; in Refrain 3 mapped tasks,
    # the 3 labels of the world, the one from Label Studio and the one made meanwhile.
    remote = list(client.tasks.list(project=link.ls_project_id, fields="all"))
    assert len(remote) == 3 and sum(len(t.annotations or []) for t in remote) == 1
    assert LabelStudioTask.objects.filter(link=link).count() == 3
    assert Annotation.objects.filter(clip__project=project).count() == stored_before + 2 == 5


def test_an_answer_that_is_not_blind_is_asked_again(
    ls_server: tuple[str, str],
    ls_user_make: Callable[[str], LsUser],
    ls_cleanup: list[int],
) -> None:
    """Label Studio does not know who labelled a clip in Refrain: such a person may answer the
    reopened task. Their answer is stored but does not close the relabel, and the next request
    (the reconciliation, or the command) asks Label Studio for one more annotator."""
    url, token = ls_server
    world = make_world(n_clips=2, planted={}, name=f"Refrain LS not blind {uuid.uuid4().hex[:8]}")
    project, clip = world.project, world.clips[0]
    seen, fresh = ls_user_make("seen"), ls_user_make("fresh")
    labeller = world.users["ann1"]  # labelled every clip in Refrain; in Label Studio as `seen`
    labeller.email = seen.email  # type: ignore[attr-defined]
    labeller.save()  # type: ignore[attr-defined]
    link = ls_project_link(project=project, base_url=url, api_key=token)
    ls_cleanup.append(link.ls_project_id)
    ls_push_tasks(link=link, clips=[clip])
    ls_task = LabelStudioTask.objects.get(link=link, clip=clip).ls_task_id
    source = LabelIssueFound(clip_id=clip.id, issue_id=4242, run_id=1, issue_type="x", score=0.1)
    relabel = Task.objects.get(pk=task_enqueue(project=project, sources=[source]).task_id(source))
    assert ls_relabels_request(task_ids=[relabel.pk])["asked"][0]["overlap"] == 1

    as_seen = ls_client(base_url=url, api_key=seen.token)
    as_seen.annotations.create(id=ls_task, result=ls_result([as_path(world.truth[0])]))
    client = ls_client(base_url=url, api_key=token)
    # Not pulled yet: that answer may still close the relabel, so nothing more is asked.
    assert ls_relabels_request()["asked"] == []
    assert ls_pull_annotations(link=link).created == 1
    relabel.refresh_from_db()
    assert relabel.status == Task.Status.OPEN
    assert Annotation.objects.get(clip=clip, user=labeller, task=None, source__contains="@")
    assert client.tasks.get(str(ls_task)).is_labeled is True
    again = ls_relabels_request()
    assert [(a["task"], a["overlap"]) for a in again["asked"]] == [(relabel.pk, 2)]
    assert next_task(url, seen, link.ls_project_id) is None
    assert next_task(url, fresh, link.ls_project_id)["id"] == ls_task  # type: ignore[index]
    as_fresh = ls_client(base_url=url, api_key=fresh.token)
    as_fresh.annotations.create(id=ls_task, result=ls_result([as_path(world.truth[0])]))
    assert ls_pull_annotations(link=link).created == 1
    relabel.refresh_from_db()
    assert relabel.status == Task.Status.DONE
    assert Annotation.objects.get(task=relabel).source == f"labelstudio:{fresh.email}"
    assert ls_relabels_request() == {"asked": [], "waiting": 0, "errors": []}
