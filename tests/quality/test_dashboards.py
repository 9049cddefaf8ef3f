"""The console's dashboards (issue 14, items 1-6) on a small project with known numbers: the
figures carry the expected traces and values, each page's query count is pinned, bad parameters
are a 400 with a message, annotators get 403 and outsiders 404."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from active_learning.models import ModelVersion
from active_learning.services.training import per_node_metrics
from annotation.models import Annotation, Task
from annotation.services.enqueue import Manual, task_enqueue
from quality.dashboards.snapshots import beta_interval, dashboards_refresh
from quality.models import ClipConsensus, DashboardSnapshot, LabelIssue, QualityCycle, QualityRun
from quality.selectors import dense_labels
from quality.services.consensus import consensus_recompute_project
from taxonomy.hierarchy import Hierarchy
from tests.factories import UserFactory
from tests.quality.builders import annotate, make_model, make_world, truth_probs

pytestmark = pytest.mark.django_db

PAGES = ("progress", "taxonomy", "annotators", "issues", "models", "learning")


def _at(days_ago: int, hour: int) -> object:
    day = timezone.now() - timedelta(days=days_ago)
    return day.replace(hour=hour, minute=0, second=0, microsecond=0)


@pytest.fixture
def console(tmp_path: Path, fast_passwords: None, settings) -> SimpleNamespace:
    """Eight clips labelled by ann1 two days ago (10 s each; clip 6 given Jazz/Bebop, its truth
    Jazz/Free Jazz); yesterday ann2 (20 s each) labelled clips 0-3, agreeing with ann1 on 1-3 and
    saying Rock/Metal for clip 0, and ann3 (30 s) gave clip 0 Rock/Punk, as ann1 did.
    Two model versions (v1 two days ago, v2 now), one cycle that acquired by uncertainty
    yesterday, one quality run whose three routed issues ended confirmed, rejected and tied,
    and an open queue of three double-overlap label tasks and one relabel task."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    w = make_world(n_clips=8, planted={6: "Jazz/Bebop"})
    u1, u2, u3 = w.users["ann1"], w.users["ann2"], w.users["ann3"]
    Annotation.objects.filter(user=u1).update(created_at=_at(2, 10), time_spent_ms=10_000)
    for i in range(4):
        annotate(w, w.clips[i], "Rock/Metal" if i == 0 else w.truth[i], user=u2)
    Annotation.objects.filter(user=u2).update(created_at=_at(1, 10), time_spent_ms=20_000)
    annotate(w, w.clips[0], "Rock/Punk", user=u3)
    Annotation.objects.filter(user=u3).update(created_at=_at(1, 11), time_spent_ms=30_000)

    hier = Hierarchy(w.index.parents_array)
    probs = truth_probs(w)
    # v1's per-node report: every Rock/Metal clip ranked Rock/Punk (near chance).
    report_probs = probs.copy()
    punk, metal = w.index.lookup("Rock/Punk").index, w.index.lookup("Rock/Metal").index
    for i, path in enumerate(w.truth):
        if path == "Rock/Metal":
            report_probs[i, metal], report_probs[i, punk] = 0.04, 0.92
    y = dense_labels([sorted(w.closed(t)) for t in w.truth], w.index)
    v1 = make_model(w, probs, number=1)
    v2 = make_model(w, probs, number=2)
    ModelVersion.objects.filter(pk=v1.pk).update(
        created_at=_at(2, 18),
        metrics={
            "hier_f1": 0.8,
            "leaf_accuracy": 0.75,
            "top_level_accuracy": 1.0,
            "mAP": 0.7,
            "per_depth_macro_f1": {"0": 0.9, "1": 0.6},
        },
    )
    ModelVersion.objects.filter(pk=v2.pk).update(
        metrics={
            "hier_f1": 0.85,
            "leaf_accuracy": 0.8,
            "top_level_accuracy": 1.0,
            "mAP": 0.75,
            "per_node": per_node_metrics(y, report_probs, hier),
        },
    )
    QualityCycle.objects.create(
        project=w.project,
        status="done",
        steps_done=list(QualityCycle.STEPS),
        results={"acquire": {"strategy": "uncertainty", "created_label": 4}},
        created_at=_at(1, 8),
        finished_at=_at(1, 9),
    )
    consensus_recompute_project(project=w.project, model_version=v2)

    run1 = QualityRun.objects.create(project=w.project, status="done", created_at=_at(1, 9))
    run2 = QualityRun.objects.create(project=w.project, status="done")
    node = {p: w.index.lookup(p) for p in ("Rock", "Rock/Metal", "Jazz/Bebop")}
    for rank, (clip, kind, where, score, status) in enumerate(
        [
            (0, "wrong_sibling", "Rock/Metal", 0.1, LabelIssue.Status.CONFIRMED),
            (1, "wrong_sibling", "Rock/Metal", 0.3, LabelIssue.Status.REJECTED),
            (2, "wrong_branch", "Rock", 0.2, LabelIssue.Status.IN_REVIEW),
        ],
        start=1,
    ):
        LabelIssue.objects.create(
            run=run1,
            project=w.project,
            clip=w.clips[clip],
            score=score,
            rank=rank,
            issue_type=kind,
            node=node[where],
            depth=node[where].depth,
            status=status,
            routed_at=timezone.now(),
        )
    LabelIssue.objects.create(
        run=run2,
        project=w.project,
        clip=w.clips[6],
        score=0.4,
        rank=1,
        issue_type="wrong_sibling",
        node=node["Jazz/Bebop"],
        depth=1,
    )
    task_enqueue(
        project=w.project,
        sources=[
            *Manual.for_clips([c.pk for c in w.clips[4:7]], overlap=2),
            Manual(clip_id=w.clips[7].pk, kind=Task.Kind.RELABEL, reason="label_issue:manual"),
        ],
    )
    took = dashboards_refresh(project=w.project)
    return SimpleNamespace(world=w, v1=v1, v2=v2, runs=(run1, run2), took=took)


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _get(console, page: str, role: str = "reviewer", **params):
    url = reverse(f"dashboards-{page}", args=[console.world.project.slug])
    return _client(console.world.users[role]).get(url, params)


def _trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert found, f"no trace {name!r} in {[t.name for t in fig.data]}"
    return found[0]


def test_progress_series_queue_pace_and_eta(console) -> None:
    response = _get(console, "progress")
    assert response.status_code == 200
    figs, stats = response.context["figs"], response.context["stats"]
    labelled = _trace(figs["progress"], "clips labelled")
    # Eight first labels two days ago, none since; four second opinions yesterday; today's
    # relabel task still open.
    assert list(labelled.y) == [8, 8, 8]
    assert list(_trace(figs["progress"], "clips with ≥ 2 opinions").y) == [0, 4, 4]
    assert list(_trace(figs["progress"], "relabel tasks open").y) == [0, 0, 1]
    queue = {t.name: dict(zip(t.x, t.y, strict=True)) for t in figs["queue"].data}
    assert queue == {"label": {"import": 3}, "relabel": {"label_issue": 1}}
    heat = figs["per-annotator"].data[0]
    ann = [console.world.users[n].username for n in ("ann1", "ann2", "ann3")]
    assert list(heat.y) == ann and len(heat.x) == 2  # the two days people labelled on
    assert [list(row) for row in heat.z] == [[8, 0], [0, 4], [0, 1]]
    assert stats["labelled"] == 8 and stats["second"] == 4 and stats["open_tasks"] == 4
    assert stats["opinions_left"] == 3 * 2 + 1
    assert stats["median_seconds"] == 10.0  # 8 x 10 s, 4 x 20 s, 1 x 30 s
    assert stats["pace_per_day"] == round(13 / 7, 1)
    assert stats["eta_days"] == round(7 / (13 / 7), 1)
    assert (
        b'id="fig-progress"' in response.content and b"ETA for the open queue" in response.content
    )


def test_taxonomy_sunburst_counts_quality_and_explorer_links(console) -> None:
    w = console.world
    response = _get(console, "taxonomy")
    fig = response.context["figs"]["sunburst"]
    sun = fig.data[0]
    assert sun.type == "sunburst" and sun.branchvalues == "remainder"
    ids = list(sun.ids)
    n_of = {k: int(c[0]) for k, c in zip(ids, sun.customdata, strict=True)}
    assert n_of["Rock"] == 4 and n_of["Rock/Punk"] == 2 and n_of["Jazz/Bebop"] == 2
    assert "Jazz/Free Jazz" not in ids  # nobody's label stands there
    sizes = dict(zip(ids, sun.values, strict=True))
    assert sizes["Rock"] == 0 and sizes["Rock/Punk"] == 2  # sizes: deepest labels, parents add
    quality = dict(
        ClipConsensus.objects.filter(project=w.project).values_list("clip_id", "quality")
    )
    colours = dict(zip(ids, sun.marker.colors, strict=True))
    expected = np.mean([quality[w.clips[0].pk], quality[w.clips[7].pk]])
    assert colours["Rock/Punk"] == pytest.approx(expected, abs=1e-4)
    # Every node has fewer than 10 labels: all outlined in red, all in the table with their link.
    assert set(sun.marker.line.color) == {"#b42318"}
    urls = {k: c[2] for k, c in zip(ids, sun.customdata, strict=True)}
    slug = w.project.slug
    assert urls["Jazz/Bebop"] == f"/p/{slug}/explore/?node=Jazz%2FBebop"
    html = response.content.decode()
    assert f'href="/p/{slug}/explore/?node=Jazz%2FFree+Jazz"' in html
    assert "refrain/dashboards.js" in html


def test_annotators_agreement_quality_confusions(console) -> None:
    w = console.world
    response = _get(console, "annotators")
    figs = response.context["figs"]
    names = [w.users[n].username for n in ("ann1", "ann2", "ann3")]
    heat = figs["agreement"].data[0]
    assert list(heat.x) == names and list(heat.y) == names
    z = heat.z
    assert z[0][1] == z[1][0] == 0.75  # ann1 and ann2 agree on 3 of the 4 clips both labelled
    assert z[0][2] == 1.0 and z[1][2] == 0.0 and np.isnan(z[0][0])
    assert "4 clips" in heat.text[0][1]
    people = {p["annotator"]: p for p in response.context["people"]}
    a2 = people[names[1]]
    assert (a2["agree"], a2["judged"]) == (3, 4)
    mean, lo, hi = beta_interval(3, 4)
    assert a2["mean"] == pytest.approx(4 / 6, abs=1e-4) == pytest.approx(mean, abs=1e-4)
    assert (a2["lo"], a2["hi"]) == (round(lo, 4), round(hi, 4)) and lo < 0.5 < hi
    assert (people[names[0]]["agree"], people[names[0]]["judged"]) == (4, 4)
    assert a2["confusions"] == {"1": [{"given": "Rock/Metal", "consensus": "Rock/Punk", "n": 1}]}
    assert people[names[0]]["confusions"] == {}
    quality = _trace(figs["quality"], "agreement with consensus")
    by_name = dict(zip(quality.y, quality.x, strict=True))
    assert by_name[names[1]] == pytest.approx(4 / 6, abs=1e-4)
    assert _trace(figs["quality"], "CROWDLAB quality")  # the consensus pass's quality too
    throughput = dict(zip(figs["throughput"].data[0].x, figs["throughput"].data[0].y, strict=True))
    assert throughput == {names[0]: round(8 / 7, 2), names[1]: round(4 / 7, 2), names[2]: 0.14}
    assert a2["median_seconds"] == 20.0
    assert "Rock/Metal → Rock/Punk (1)" in response.content.decode()


def test_issues_over_runs_outcomes_and_precision(console) -> None:
    run1, run2 = console.runs
    response = _get(console, "issues")
    figs = response.context["figs"]
    by_type = {t.name: (list(t.x), list(t.y)) for t in figs["by-type"].data}
    assert by_type["wrong_sibling"][1] == [2, 1] and by_type["wrong_branch"][1] == [1]
    assert by_type["wrong_sibling"][0][0].startswith(f"run {run1.pk} · ")
    assert by_type["wrong_sibling"][0][1].startswith(f"run {run2.pk} · ")
    by_depth = {t.name: list(t.y) for t in figs["by-depth"].data}
    assert by_depth == {"depth 0": [1], "depth 1": [2, 1]}
    nodes = figs["nodes"].data[0]
    assert dict(zip(nodes.y, nodes.x, strict=True)) == {"Rock/Metal": 2, "Rock": 1, "Jazz/Bebop": 1}
    outcomes = {t.name: list(t.y) for t in figs["outcomes"].data}
    assert outcomes["confirmed"] == [1] and outcomes["rejected"] == [1] and outcomes["tie"] == [1]
    assert outcomes["precision (people)"] == [0.5]  # one confirmed of two decided
    assert outcomes["expected precision (scores)"] == [pytest.approx(0.8)]  # mean(1 - score)
    row = response.context["outcomes"][0]
    assert row["run"] == run1.pk and row["routed"] == 3 and row["waiting"] == 0


def test_models_metrics_confusion_drill_down_and_near_chance(console) -> None:
    w = console.world
    response = _get(console, "models")
    figs = response.context["figs"]
    hier_f1 = _trace(figs["metrics"], "hier_f1")
    assert list(hier_f1.x) == [1, 2] and list(hier_f1.y) == [0.8, 0.85]
    assert list(_trace(figs["metrics"], "macro F1 depth 1").y) == [0.6]
    top = figs["confusion"].data[0]
    assert list(top.y) == ["Rock", "Electronic", "Jazz"]  # most labelled first
    assert top.text[0][0] == 4 and top.z[0][0] == 1.0  # the model never leaves a clip's branch
    leaves = _get(console, "models", level=1).context["figs"]["confusion"].data[0]
    row = list(leaves.y).index("Jazz/Bebop")  # full paths where branches mix
    col = list(leaves.x).index("Jazz/Free Jazz")
    assert leaves.text[row][col] == 1  # clip 6: labelled Bebop, the model says Free Jazz
    drill = _get(console, "models", parent="Jazz")
    heat = drill.context["figs"]["confusion"].data[0]
    assert list(heat.y) == ["Bebop"] and list(heat.x) == ["Bebop", "Free Jazz"]
    assert [list(r) for r in heat.z] == [[0.5, 0.5]]
    assert "children of Jazz" in drill.context["conf"]["title"]
    assert [d["key"] for d in response.context["conf"]["drill"]] == ["Rock", "Electronic", "Jazz"]
    near = figs["near-chance"].data[0]
    assert list(near.y) == ["Rock/Metal"] and near.x[0] == 0.0
    assert response.context["newest"].number == 2
    assert str(w.project.slug) in response.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"level": "abc"}, "level must be a whole number"),
        ({"level": "7"}, "unknown level 7; this taxonomy has levels 0 to 1"),
        ({"level": "-1"}, "unknown level -1"),
        ({"parent": "No/Such"}, "unknown taxonomy node"),
        ({"parent": "Rock/Punk"}, "is a leaf"),
        ({"parent": "Rock", "level": "0"}, "does not match node Rock"),
    ],
)
def test_models_page_refuses_bad_levels_with_a_message(console, params, message) -> None:
    response = _get(console, "models", **params)
    assert response.status_code == 422  # Invalid, as the API maps it (refrain.api.ERROR_STATUS)
    assert message in response.content.decode()


def test_learning_curve_per_strategy_and_simulations(console, settings) -> None:
    response = _get(console, "learning")
    fig = response.context["figs"]["curve"]
    first = _trace(fig, "project · initial labels")
    assert list(first.x) == [8] and list(first.y) == [0.8]  # v1: after ann1's eight labels
    later = _trace(fig, "project · uncertainty")
    assert list(later.x) == [13] and list(later.y) == [0.85]
    assert b'id="no-simulations"' in response.content
    leaf = _get(console, "learning", metric="leaf_accuracy").context["figs"]["curve"]
    assert list(_trace(leaf, "project · uncertainty").y) == [0.8]
    bad = _get(console, "learning", metric="accuracy;drop")
    assert bad.status_code == 422 and "unknown metric" in bad.content.decode()

    project = console.world.project
    sim = Path(settings.ARTIFACT_ROOT) / f"project_{project.pk}" / "simulation.json"
    sim.parent.mkdir(parents=True, exist_ok=True)
    sim.write_text(
        json.dumps(
            {
                "summary": {
                    "A": {
                        "uncertainty": {
                            "spent": [40, 80],
                            "hier_f1_mean": [0.3, 0.4],
                            "hier_f1_std": [0.01, 0.02],
                        }
                    }
                }
            }
        )
    )
    dashboards_refresh(project=project, pages=("learning",))
    response = _get(console, "learning")
    simulated = _trace(response.context["figs"]["curve"], "simulation A · uncertainty")
    assert list(simulated.x) == [40, 80] and list(simulated.y) == [0.3, 0.4]
    assert b'id="no-simulations"' not in response.content


# The request's savepoint and its release (ATOMIC_REQUESTS), session, user, project, membership,
# then the page's own reads: the snapshot row and the live aggregates (progress: the queue;
# issues: runs, by run, nodes, outcomes and no snapshot; models: metrics, the newest model;
# learning: the loop policy).
QUERIES = {
    "progress": 8,
    "taxonomy": 7,
    "annotators": 7,
    "issues": 10,
    "models": 9,
    "learning": 8,
}


@pytest.mark.parametrize("page", PAGES)
def test_query_counts_are_pinned(console, page, django_assert_num_queries) -> None:
    client = _client(console.world.users["reviewer"])
    url = reverse(f"dashboards-{page}", args=[console.world.project.slug])
    client.get(url)  # warm the per-process taxonomy index
    with django_assert_num_queries(QUERIES[page]):
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("page", PAGES)
def test_annotators_are_refused_and_outsiders_see_nothing(console, page) -> None:
    url = reverse(f"dashboards-{page}", args=[console.world.project.slug])
    assert _client(console.world.users["ann1"]).get(url).status_code == 403
    assert _client(UserFactory(username=f"outsider-{page}")).get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page
    assert _get(console, page, role="admin").status_code == 200


def test_a_missing_or_old_snapshot_asks_a_worker_once(
    console, settings, django_capture_on_commit_callbacks
) -> None:
    project = console.world.project
    DashboardSnapshot.objects.filter(project=project, page="taxonomy").delete()
    cache.delete(f"dashboards-refresh:{project.pk}")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = _get(console, "taxonomy")
        _get(console, "taxonomy")  # a second view while the first request stands sends nothing
    assert response.status_code == 200 and len(sent) == 1
    assert b"not computed yet" in response.content
    assert (
        response.context["figs"]["sunburst"].layout.annotations[0].text == "no clip has a label yet"
    )
    settings.REFRAIN_DASHBOARD_MAX_AGE_SECONDS = 0
    cache.delete(f"dashboards-refresh:{project.pk}")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        page = _get(console, "progress")
    assert len(sent) == 1 and b"Computed " in page.content


def test_only_admins_may_ask_for_a_recompute(console, django_capture_on_commit_callbacks) -> None:
    url = reverse("dashboards-refresh", args=[console.world.project.slug])
    assert _client(console.world.users["reviewer"]).post(url).status_code == 403
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = _client(console.world.users["admin"]).post(
            url, {"next": "https://evil.example/"}
        )
    assert response.status_code == 302 and len(sent) == 1
    assert response["Location"] == reverse("dashboards-progress", args=[console.world.project.slug])


def test_snapshots_of_an_empty_project_render(fast_passwords) -> None:
    w = make_world(n_clips=0, planted={})
    dashboards_refresh(project=w.project)
    for page in PAGES:
        response = _get(SimpleNamespace(world=w), page)
        assert response.status_code == 200, page
        assert response.content.count(b"plotly-graph-div") >= 1


def test_the_label_quality_dashboard_bins_consensus_quality_in_sql(console) -> None:
    from quality.selectors import CONSENSUS_BINS, dashboard_frames

    project = console.world.project
    frame = dashboard_frames(project=project)["consensus"]
    qualities = list(
        ClipConsensus.objects.filter(project=project, quality__isnull=False).values_list(
            "quality", flat=True
        )
    )
    assert frame["count"].sum() == len(qualities) == 8
    expected = sorted(min(int(q * CONSENSUS_BINS), CONSENSUS_BINS - 1) for q in qualities)
    got = sorted(b for b, c in zip(frame["bin"], frame["count"], strict=True) for _ in range(c))
    assert got == expected
    page = _client(console.world.users["admin"]).get(
        reverse("quality-dashboard", args=[project.slug])
    )
    assert page.status_code == 200 and page.content.count(b"plotly-graph-div") == 5
