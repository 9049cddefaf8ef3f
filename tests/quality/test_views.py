"""Quality pages: who may see them, filters, the clip page's tree and history, the dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from quality.models import LabelIssue
from quality.services.consensus import consensus_recompute_project
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from tests.factories import UserFactory
from tests.quality.builders import PLANTED, make_model, make_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path: Path, fast_passwords: None):
    w = make_world()
    make_model(w)
    run = quality_run_detect(project=w.project, budget=len(w.clips))
    issues_route(run=run, budget=2)
    consensus_recompute_project(project=w.project)
    return w


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _urls(world) -> list[str]:
    slug = world.project.slug
    return [
        reverse("quality-dashboard", args=[slug]),
        reverse("quality-issues", args=[slug]),
        reverse("quality-clip", args=[slug, world.clips[0].pk]),
    ]


@pytest.mark.parametrize("role", ["admin", "reviewer"])
def test_reviewers_and_admins_see_every_page(world, role: str) -> None:
    client = _client(world.users[role])
    for url in _urls(world):
        response = client.get(url)
        assert response.status_code == 200, url


def test_annotators_are_refused_and_outsiders_see_nothing(world) -> None:
    annotator = _client(world.users["ann1"])
    outsider = _client(UserFactory(username="outsider-q"))
    for url in _urls(world):
        assert annotator.get(url).status_code == 403
        assert outsider.get(url).status_code == 404
    assert Client().get(_urls(world)[0]).status_code == 302  # to the login page


def test_issue_list_filters_and_paginates(world) -> None:
    client = _client(world.users["reviewer"])
    url = reverse("quality-issues", args=[world.project.slug])
    page = client.get(url).context["page"]
    assert page.paginator.count == len(world.clips)
    routed = client.get(url, {"status": "routed"}).context["page"]
    assert routed.paginator.count == 2
    sib = client.get(url, {"type": "wrong_sibling", "depth": 1}).context["page"]
    assert {i.clip_id for i in sib} >= {world.clips[i].pk for i in PLANTED}
    by_node = client.get(url, {"node": PLANTED[0]}).context["page"]
    assert all(i.node.key == PLANTED[0] for i in by_node) and by_node.paginator.count >= 1
    assert client.get(url, {"node": "no/such"}).context["page"].paginator.count == 0
    assert client.get(url, {"page": 99}).status_code == 200


def test_clip_page_shows_labels_tree_and_history(world) -> None:
    client = _client(world.users["reviewer"])
    clip = world.clips[0]
    response = client.get(reverse("quality-clip", args=[world.project.slug, clip.pk]))
    ctx = response.context
    assert [n.key for n in ctx["given"]] == ["Rock", PLANTED[0]]
    assert ctx["has_probs"] and len(ctx["tree"]) == len(world.index.nodes)
    depths = [r.node.depth for r in ctx["tree"]]
    assert depths[0] == 0 and 1 in depths  # depth-first: children follow their parent
    truth_row = next(r for r in ctx["tree"] if r.node.key == world.truth[0])
    assert truth_row.prob > 0.5 and truth_row.suggested
    kinds = [e.kind for e in ctx["history"]]
    assert "annotation:label" in kinds and "issue" in kinds and "routed" in kinds
    assert b"prob-tree" in response.content


def test_clip_of_another_project_is_not_found(world) -> None:
    other = make_world(n_clips=1, planted={})
    client = _client(world.users["reviewer"])
    url = reverse("quality-clip", args=[world.project.slug, other.clips[0].pk])
    assert client.get(url).status_code == 404


def test_dashboard_renders_its_figures(world) -> None:
    response = _client(world.users["admin"]).get(
        reverse("quality-dashboard", args=[world.project.slug])
    )
    assert len(response.context["figures"]) == 5
    assert response.content.count(b"plotly-graph-div") == 5
    assert LabelIssue.objects.filter(project=world.project).exists()


def test_issue_list_marks_suspects_the_model_barely_tells_apart(world) -> None:
    from active_learning.models import ModelVersion
    from active_learning.services.training import per_node_metrics
    from quality.selectors import dense_labels
    from taxonomy.hierarchy import Hierarchy
    from tests.quality.builders import truth_probs

    # The model's out-of-sample report: every Rock/Metal clip ranked Rock/Punk (near chance).
    hier = Hierarchy(world.index.parents_array)
    probs = truth_probs(world)
    punk = world.index.lookup("Rock/Punk").index
    metal = world.index.lookup("Rock/Metal").index
    for i, path in enumerate(world.truth):
        if path == "Rock/Metal":
            probs[i, metal], probs[i, punk] = 0.04, 0.92
    y = dense_labels([sorted(world.closed(t)) for t in world.truth], world.index)
    mv = ModelVersion.objects.get(project=world.project)
    mv.metrics = {**(mv.metrics or {}), "per_node": per_node_metrics(y, probs, hier)}
    mv.save()
    client = _client(world.users["reviewer"])
    url = reverse("quality-issues", args=[world.project.slug])
    html = client.get(url, {"node": "Rock/Metal"}).content.decode()
    rows = [r for r in html.split("<tbody>")[1].split("<tr") if "Rock/Metal" in r]
    assert rows and all("near chance" in r for r in rows)
    other = client.get(url, {"node": "Jazz/Free Jazz"}).content.decode().split("<tbody>")[1]
    assert "Jazz/Free Jazz" in other and "near chance" not in other
