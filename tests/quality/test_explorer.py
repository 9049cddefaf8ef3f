"""The clip explorer: its summary rows agree with the label that stands and stay in step; every
filter, sort and page on known data; the URL round-trips; bulk actions make the tasks through the
one producer and dedupe on repeat; bad input is a 4xx that changes nothing; bounded queries."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from django.test import Client
from django.urls import reverse

from annotation.models import Annotation, Clip, Membership, Task
from annotation.selectors import current_labels
from quality.explorer.filters import SORTS, ExplorerQuery, explorer_query_parse
from quality.explorer.selectors import explorer_page, explorer_queryset
from quality.models import ClipConsensus, ClipSummary, LabelIssue
from quality.services.consensus import consensus_recompute_project
from quality.services.cycle import annotation_settle
from quality.services.detection import quality_run_detect
from quality.services.routing import issues_route
from quality.services.summary import clip_summaries_refresh
from refrain.errors import NotFound
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.quality.builders import annotate, make_model, make_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path: Path, fast_passwords: None):
    """28 labelled clips (4 planted swaps), a model, a detection run with 2 routed issues; ann2
    disagrees on clips 1 and 2 and agrees on clip 3; clips 28-29 are unlabelled, 29 failed; clip 4
    carries metadata."""
    w = make_world()
    for path, clip in [("Jazz/Bebop", w.clips[1]), ("Rock/Punk", w.clips[2])]:
        annotate(w, clip, path, user=w.users["ann2"])
    annotate(w, w.clips[3], w.truth[3], user=w.users["ann2"])
    w.clips[4].metadata = {"artist": "Zappa Frank", "mood": "grumpy"}
    w.clips[4].save(update_fields=["metadata"])
    w.clips.append(ClipFactory(project=w.project, original_name="fresh-unlabelled.wav"))
    w.clips.append(ClipFactory(project=w.project, status=Clip.Status.FAILED, duration_s=None))
    make_model(w)
    run = quality_run_detect(project=w.project, budget=len(w.clips))
    issues_route(run=run, budget=2)
    consensus_recompute_project(project=w.project)
    clip_summaries_refresh(project=w.project)
    return w


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _url(world, **params: str) -> str:
    base = reverse("quality-explore", args=[world.project.slug])
    return base + ("?" + urlencode(params) if params else "")


def _ids(world, **params: str) -> set[int]:
    query = explorer_query_parse(QueryDict(urlencode(params)))
    return set(
        explorer_queryset(project=world.project, query=query).values_list("clip_id", flat=True)
    )


# --- the summary rows ----------------------------------------------------------------------------


def test_summary_label_is_the_label_that_stands(world) -> None:
    current = current_labels(project=world.project)
    rows = {s.clip_id: s for s in ClipSummary.objects.filter(project=world.project)}
    assert set(rows) == {c.pk for c in world.clips}
    for clip_id, ann_id, node_ids in zip(
        current.clip_ids, current.annotation_ids, current.node_ids, strict=True
    ):
        row = rows.pop(clip_id)
        assert row.label_annotation_id == ann_id
        assert set(row.label_node_ids.split()) == {str(n) for n in node_ids}
        leaves = {world.index.by_id[n].path for n in node_ids if world.index.by_id[n].is_leaf}
        assert set(row.label.split("|")) == leaves
    # What is left has no label that stands: the unlabelled and the failed clip.
    assert {c for c, r in rows.items() if r.label_annotation_id is None} == {
        world.clips[28].pk,
        world.clips[29].pk,
    }


def test_summary_columns_come_from_their_tables(world) -> None:
    rows = {s.clip_id: s for s in ClipSummary.objects.filter(project=world.project)}
    for cons in ClipConsensus.objects.filter(project=world.project):
        assert rows[cons.clip_id].quality == cons.quality
        assert rows[cons.clip_id].agreement == cons.agreement
    routed = LabelIssue.objects.filter(project=world.project, status=LabelIssue.Status.ROUTED)
    assert routed.count() == 2
    for issue in routed:
        assert (rows[issue.clip_id].issue_status, rows[issue.clip_id].issue_type) == (
            "routed",
            issue.issue_type,
        )
    two = rows[world.clips[1].pk]
    assert two.n_annotators == 2 and two.n_annotations == 2
    assert two.annotators == f"ann1-{world.project.slug}, ann2-{world.project.slug}"
    # The model puts its mass on each clip's true path: the prediction is the true leaf.
    for i, clip in enumerate(world.clips[:28]):
        assert rows[clip.pk].prediction == world.truth[i]
        assert rows[clip.pk].prediction_prob == pytest.approx(0.92, abs=1e-4)
        assert rows[clip.pk].model_number == 1


def test_summary_stays_in_step_with_a_new_annotation_and_routing(world) -> None:
    clip = world.clips[10]  # planted swap, labelled by ann1 only
    assert ClipSummary.objects.get(clip=clip).n_annotators == 1
    ann = annotate(world, clip, world.truth[10], user=world.users["ann3"])
    annotation_settle(annotation=ann)  # what the worker runs on annotation_committed
    row = ClipSummary.objects.get(clip=clip)
    assert row.n_annotators == 2 and f"ann3-{world.project.slug}" in row.annotators
    assert (
        row.label_annotation_id
        == current_labels(project=world.project, clip_ids=[clip.pk]).annotation_ids[0]
    )
    assert row.quality == ClipConsensus.objects.get(clip=clip).quality
    # Routing more of the run's issues moves their rows to "routed".
    run = LabelIssue.objects.filter(project=world.project).first().run
    issues_route(run=run, budget=6)
    for issue in LabelIssue.objects.filter(run=run, status=LabelIssue.Status.ROUTED):
        assert ClipSummary.objects.get(clip_id=issue.clip_id).issue_status == "routed"
    # A full refresh after all that changes nothing: the incremental updates were exact.
    before = {
        s.clip_id: (s.label, s.annotator_ids, s.quality, s.issue_status)
        for s in ClipSummary.objects.filter(project=world.project)
    }
    clip_summaries_refresh(project=world.project)
    after = {
        s.clip_id: (s.label, s.annotator_ids, s.quality, s.issue_status)
        for s in ClipSummary.objects.filter(project=world.project)
    }
    assert after == before


def test_the_page_indexes_clips_imported_since_the_last_refresh(world) -> None:
    new = ClipFactory(project=world.project, original_name="just-imported.wav")
    assert not ClipSummary.objects.filter(clip=new).exists()
    r = _client(world.users["reviewer"]).get(_url(world, q="just-imported"))
    assert r.status_code == 200
    assert ClipSummary.objects.filter(clip=new).exists()
    assert f'data-clip="{new.pk}"' in r.content.decode()


def test_a_large_import_is_left_to_a_worker_and_the_page_says_so(
    world, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from django.core.cache import cache

    from quality.explorer import views
    from quality.tasks import refresh_clip_summaries

    cache.delete(f"explorer-refresh:{world.project.pk}")
    monkeypatch.setattr(views, "SYNC_FILL", 1)
    sent: list[tuple] = []
    monkeypatch.setattr(refresh_clip_summaries, "delay", lambda *a, **k: sent.append(a))
    for _ in range(3):
        ClipFactory(project=world.project)
    client = _client(world.users["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        r = client.get(_url(world))
        client.get(_url(world))  # a second view does not queue it again
    assert "3 new clips still being indexed" in r.content.decode()
    assert sent == [(world.project.pk,)]


# --- filters -------------------------------------------------------------------------------------


def test_node_filter_takes_descendants(world) -> None:
    labels = current_labels(project=world.project)
    current = dict(zip(labels.clip_ids, labels.node_ids, strict=True))
    rock = world.index.lookup("Rock")
    expected = {c for c, nodes in current.items() if rock.pk in nodes}
    assert len(expected) >= 8
    assert _ids(world, node="Rock") == expected
    assert _ids(world, node=rock.key) == expected
    punk = world.index.lookup("Rock/Punk")
    assert _ids(world, node=punk.key) == {c for c, nodes in current.items() if punk.pk in nodes}
    assert _ids(world, node=punk.key) < expected


def test_status_issue_annotator_quality_disagreement_and_search_filters(world) -> None:
    labelled = set(current_labels(project=world.project).clip_ids)
    every = {c.pk for c in world.clips}
    assert _ids(world, status="labelled") == labelled
    assert _ids(world, status="unlabelled") == every - labelled
    assert _ids(world, status="failed") == {world.clips[29].pk}
    assert _ids(world, status="ready") == every - {world.clips[29].pk}

    issues = LabelIssue.objects.filter(project=world.project)
    routed = set(issues.filter(status="routed").values_list("clip_id", flat=True))
    assert _ids(world, issue_status="routed") == routed
    sibling = set(issues.filter(issue_type="wrong_sibling").values_list("clip_id", flat=True))
    assert sibling and _ids(world, issue_type="wrong_sibling") == sibling
    assert _ids(world, issue_type="none") == every - set(issues.values_list("clip_id", flat=True))

    ann2 = set(
        Annotation.objects.filter(user=world.users["ann2"]).values_list("clip_id", flat=True)
    )
    assert (
        _ids(world, annotator=f"ann2-{world.project.slug}")
        == ann2
        == {world.clips[i].pk for i in (1, 2, 3)}
    )

    quality = dict(
        ClipConsensus.objects.filter(project=world.project).values_list("clip_id", "quality")
    )
    mid = {c for c, q in quality.items() if q is not None and 0.2 <= q <= 0.6}
    assert _ids(world, quality="0.2-0.6") == mid
    assert _ids(world, quality="0.5-") == {c for c, q in quality.items() if q and q >= 0.5}
    assert _ids(world, quality="-0.5") == {
        c for c, q in quality.items() if q is not None and q <= 0.5
    }

    assert _ids(world, disagreement="1") == {world.clips[1].pk, world.clips[2].pk}
    assert _ids(world, disagreement="0") == every - {world.clips[1].pk, world.clips[2].pk}

    assert _ids(world, q="zappa") == {world.clips[4].pk}  # metadata, any case
    assert _ids(world, q="GRUMPY") == {world.clips[4].pk}
    assert _ids(world, q="fresh-unlabelled") == {world.clips[28].pk}  # the name
    assert _ids(world, q=world.clips[7].external_id) == {world.clips[7].pk}


def test_filters_combine(world) -> None:
    both = _ids(world, node="Rock", status="labelled", disagreement="0")
    assert both == _ids(world, node="Rock") & _ids(world, status="labelled") & _ids(
        world, disagreement="0"
    )


# --- sort, pages, URL ----------------------------------------------------------------------------


@pytest.mark.parametrize("sort", sorted(SORTS))
@pytest.mark.parametrize("descending", [False, True])
def test_every_column_sorts_with_blanks_last(world, sort: str, descending: bool) -> None:
    query = ExplorerQuery(sort=f"-{sort}" if descending else sort)
    column = SORTS[sort]
    field = "clip_id" if column == "clip" else column
    values = list(
        explorer_queryset(project=world.project, query=query).values_list(field, flat=True)
    )
    assert len(values) == len(world.clips)
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=descending)
    assert values[len(present) :] == [None] * (len(values) - len(present))


def test_pages_cover_the_match_once_and_past_the_end_is_not_found(world) -> None:
    seen: list[int] = []
    for page in (1, 2, 3):
        p = explorer_page(
            project=world.project, query=ExplorerQuery(sort="-quality", page=page), page_size=12
        )
        assert p.count == 30 and p.n_pages == 3 and not p.capped
        seen += [r["clip_id"] for r in p.rows]
    assert sorted(seen) == sorted(c.pk for c in world.clips) and len(seen) == 30
    with pytest.raises(NotFound, match="page 4 is past the end"):
        explorer_page(project=world.project, query=ExplorerQuery(page=4), page_size=12)


def test_the_count_stops_at_its_cap_and_the_page_says_so(world, monkeypatch) -> None:
    from quality.explorer import selectors

    monkeypatch.setattr(selectors, "COUNT_CAP", 10)
    first = explorer_page(project=world.project, query=ExplorerQuery(), page_size=4)
    assert (first.count, first.capped, first.has_next) == (10, True, True)
    # Pages past the cap are still there (30 clips: page 8 holds the last two) ...
    last = explorer_page(project=world.project, query=ExplorerQuery(page=8), page_size=4)
    assert len(last.rows) == 2 and not last.has_next
    # ... and past the real end is still "not found".
    with pytest.raises(NotFound, match="past the end"):
        explorer_page(project=world.project, query=ExplorerQuery(page=9), page_size=4)
    body = _client(world.users["reviewer"]).get(_url(world)).content.decode()
    assert "more than 10" in body and "count capped" in body
    # At the cap exactly, the count is exact.
    monkeypatch.setattr(selectors, "COUNT_CAP", 30)
    exact = explorer_page(project=world.project, query=ExplorerQuery(), page_size=4)
    assert (exact.count, exact.capped) == (30, False)


def test_the_url_round_trips() -> None:
    query = ExplorerQuery(
        node="Rock/Punk",
        status="labelled",
        issue_type="wrong_sibling",
        issue_status="routed",
        annotator="ann2",
        quality=(0.2, 0.6),
        disagreement=True,
        q="zappa frank",
        sort="-probability",
        page=3,
    )
    assert explorer_query_parse(QueryDict(query.urlencode())) == query
    assert query.urlencode().startswith("node=Rock%2FPunk&status=labelled")
    assert explorer_query_parse(QueryDict("")) == ExplorerQuery()
    assert ExplorerQuery().urlencode() == ""


def test_the_page_shows_the_columns_and_links_rows_to_their_clip_page(world) -> None:
    r = _client(world.users["reviewer"]).get(_url(world, sort="-quality", node="Rock"))
    assert r.status_code == 200
    body = r.content.decode()
    clip = world.clips[0]
    assert reverse("quality-clip", args=[world.project.slug, clip.pk]) in body
    assert "Label that stands" in body and "Model prediction" in body
    assert world.truth[0] in body  # the model's prediction for clip 0
    # Sort links keep the filter; the filter form keeps the sort.
    assert "?node=Rock&amp;sort=quality" in body
    assert 'name="sort" value="-quality"' in body


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ("colour=red", 422, "unknown filter colour"),
        ("quality=0.6-0.2", 422, "lower bound is above"),
        ("quality=abc", 422, "is not a range"),
        ("quality=0.2-1.5", 422, "must lie in [0, 1]"),
        ("sort=loudness", 422, "sort by one of"),
        ("page=0", 422, "not a page number"),
        ("page=two", 422, "not a page number"),
        ("status=done", 422, "not one of"),
        ("node=Polka", 422, "neither a key nor a path"),
        ("annotator=nobody", 422, "not a member"),
        ("status=ready&status=failed", 422, "more than once"),
        ("page=999", 404, ""),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(world, params: str, status: int, message: str) -> None:
    r = _client(world.users["reviewer"]).get(_url(world) + "?" + params.replace("+", "%2B"))
    assert r.status_code == status, r.content[:300]
    assert message in r.content.decode()


def test_annotators_and_outsiders_cannot_open_or_act(world) -> None:
    n_tasks = Task.objects.count()
    ann = _client(world.users["ann1"])
    assert ann.get(_url(world)).status_code == 403
    r = ann.post(
        reverse("quality-explore-action", args=[world.project.slug]),
        {"action": "relabel", "clip": [world.clips[0].pk]},
    )
    assert r.status_code == 403
    outsider = _client(UserFactory())
    assert outsider.get(_url(world)).status_code == 404
    assert Task.objects.count() == n_tasks


# --- bulk actions --------------------------------------------------------------------------------


def _post(world, user="reviewer", **data) -> object:
    return _client(world.users[user]).post(
        reverse("quality-explore-action", args=[world.project.slug]), data
    )


def test_send_checked_rows_for_a_blind_relabel_dedupes_on_repeat(world) -> None:
    chosen = [world.clips[i].pk for i in (5, 6, 28)]  # 28 has no label: skipped
    r = _post(world, action="relabel", scope="selected", clip=chosen, filter="node=Rock")
    assert r.status_code == 302 and r["Location"].endswith("/explore/?node=Rock")
    tasks = Task.objects.filter(project=world.project, reason="requested")
    assert {t.clip_id for t in tasks} == set(chosen[:2])
    assert all(t.kind == Task.Kind.RELABEL and t.status == Task.Status.OPEN for t in tasks)
    assert {t.dedupe_key for t in tasks} == {f"relabel:requested:{c}:1" for c in chosen[:2]}
    assert tasks.first().reason_detail == {"requested_by": f"reviewer-{world.project.slug}"}
    n = Task.objects.count()
    _post(world, action="relabel", scope="selected", clip=chosen)
    assert Task.objects.count() == n  # the same tasks again: nothing new


def test_all_matching_the_filter_relabels_every_match_and_queue_labels_the_unlabelled(
    world,
) -> None:
    jazz = _ids(world, node="Jazz", status="labelled")
    r = _post(world, action="relabel", scope="all", filter="node=Jazz&status=labelled")
    assert r.status_code == 302
    assert set(Task.objects.filter(reason="requested").values_list("clip_id", flat=True)) == jazz

    before = Task.objects.count()
    r = _post(world, action="queue", scope="all", filter="status=unlabelled")
    assert r.status_code == 302
    made = Task.objects.filter(reason="explorer", kind=Task.Kind.LABEL)
    # The failed clip has no audio to label; the ready unlabelled one gets its task.
    assert set(made.values_list("clip_id", flat=True)) == {world.clips[28].pk}
    assert made.get().overlap == world.project.overlap
    assert Task.objects.count() == before + 1
    _post(world, action="queue", scope="all", filter="status=unlabelled")
    assert Task.objects.count() == before + 1


def test_export_of_the_selection_uses_the_export_columns(world) -> None:
    chosen = [world.clips[0].pk, world.clips[1].pk]
    r = _post(world, action="export", format="csv", scope="selected", clip=chosen)
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert sorted(int(row["refrain_id"]) for row in rows) == chosen
    assert rows[0]["labels"] == "Rock/Metal"  # the planted swap stands until relabelled
    r = _post(world, action="export", format="jsonl", scope="all", filter="status=failed")
    assert b"".join(r.streaming_content).count(b"\n") == 1


def test_bulk_actions_refuse_foreign_clips_and_bad_requests_and_change_nothing(world) -> None:
    other = ClipFactory(project=ProjectFactory())
    n_tasks = Task.objects.count()
    cases = [
        ({"action": "relabel", "clip": [world.clips[0].pk, other.pk]}, "not in project"),
        ({"action": "queue", "clip": [other.pk]}, "not in project"),
        ({"action": "relabel", "clip": ["x"]}, "whole numbers"),
        ({"action": "relabel"}, "no clips selected"),
        ({"action": "explode", "clip": [world.clips[0].pk]}, "not one of"),
        ({"action": "relabel", "scope": "all", "filter": "quality=9-"}, "must lie in"),
        ({"action": "relabel", "scope": "all", "filter": "q=no-such-clip"}, "no clip matches"),
        ({"action": "export", "format": "xlsx", "clip": [world.clips[0].pk]}, "not one of"),
    ]
    for data, message in cases:
        r = _post(world, **data)
        assert r.status_code == 422, (data, r.content[:200])
        assert message in r.content.decode(), (data, r.content[:200])
    assert Task.objects.count() == n_tasks


def test_actions_need_the_csrf_token(world) -> None:
    c = Client(enforce_csrf_checks=True)
    c.force_login(world.users["admin"])
    r = c.post(
        reverse("quality-explore-action", args=[world.project.slug]),
        {"action": "relabel", "clip": [world.clips[0].pk]},
    )
    assert r.status_code == 403
    assert not Task.objects.filter(reason="requested").exists()


# --- the clip page, queries ----------------------------------------------------------------------


def test_the_clip_page_has_the_annotators_player(world) -> None:
    clip = world.clips[0]
    r = _client(world.users["reviewer"]).get(
        reverse("quality-clip", args=[world.project.slug, clip.pk])
    )
    body = r.content.decode()
    assert r.status_code == 200
    assert 'id="wave"' in body and 'id="spec"' in body and "clip_player.js" in body
    assert "<audio controls" not in body
    # The served (tag-free) copy, as everyone but an admin asking for the original hears it.
    assert f"/clips/{clip.pk}/audio" in body and "original=1" not in body


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"node": "Rock", "sort": "-quality"},
        {"annotator": "ann2", "sort": "label"},
        {"quality": "0.1-0.9", "sort": "-probability"},
        {"issue_status": "routed", "q": "clip"},
    ],
)
def test_the_page_runs_a_fixed_number_of_queries(
    world, django_assert_num_queries, params: dict[str, str]
) -> None:
    if "annotator" in params:
        params = {**params, "annotator": f"ann2-{world.project.slug}"}
    client = _client(world.users["reviewer"])
    url = _url(world, **params)
    client.get(url)  # warm the session and the taxonomy cache
    # session, user, project, membership (with the project and its taxonomy version), the two
    # counts of clips and summary rows, the match count, the rows, the members, (the annotator
    # lookup), and the savepoint pair of ATOMIC_REQUESTS.
    expected = 11 + (1 if "annotator" in params else 0)
    with django_assert_num_queries(expected):
        assert client.get(url).status_code == 200
    # More clips, same queries.
    for _ in range(20):
        ClipFactory(project=world.project)
    clip_summaries_refresh(project=world.project)
    with django_assert_num_queries(expected):
        assert client.get(url).status_code == 200


def test_members_of_another_role_see_their_own_project_only(world) -> None:
    project = ProjectFactory()
    rev = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    assert _client(rev).get(_url(world)).status_code == 404


def test_the_api_gives_the_same_page(world) -> None:
    client = _client(world.users["reviewer"])
    url = f"/api/v1/projects/{world.project.pk}/clips/explore"
    r = client.get(url, {"node": "Rock", "sort": "-quality"})
    assert r.status_code == 200, r.content[:300]
    body = r.json()
    page = explorer_page(project=world.project, query=ExplorerQuery(node="Rock", sort="-quality"))
    assert body["count"] == page.count and not body["count_capped"]
    assert [row["clip_id"] for row in body["rows"]] == [row["clip_id"] for row in page.rows]
    first = body["rows"][0]
    assert all(path.startswith("Rock/") for path in first["label"])
    bad = client.get(url, {"quality": "0.9-0.1"})
    assert bad.status_code == 422 and "lower bound" in bad.json()["detail"]
    assert client.get(url, {"page": "99"}).status_code == 404
    assert _client(world.users["ann1"]).get(url).status_code == 403
