import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Annotation, TaxonomyNode, TaxonomyVersion
from annotation.selectors import TaxonomyIndex
from annotation.services.annotations import annotation_create
from annotation.services.taxonomies import taxonomy_import
from taxonomy.formats import TaxonomyFormatError
from tests.factories import ClipFactory, ProjectFactory

pytestmark = pytest.mark.django_db

FMA_V1 = (
    "genre_id,#tracks,parent,title,top_level\n"
    "12,10,0,Rock,12\n"
    "25,5,12,Punk,12\n"
    "31,4,12,Metal,12\n"
    "4,8,0,Jazz,4\n"
    "97,2,4,Bebop,4\n"
)
# v2: Punk renamed, Metal moved under Jazz (for the test's sake), Bebop removed, Noise added.
FMA_V2 = (
    "genre_id,#tracks,parent,title,top_level\n"
    "12,10,0,Rock,12\n"
    "25,5,12,Punk Rock,12\n"
    "31,4,4,Metal,4\n"
    "4,8,0,Jazz,4\n"
    "70,1,12,Noise,12\n"
)


def test_versions_diffs_and_annotations_keep_their_version() -> None:
    first = taxonomy_import(name="FMA", data=FMA_V1, filename="genres.csv")
    assert first.created and first.version.number == 1 and first.version.n_nodes == 5
    punk = TaxonomyNode.objects.get(version=first.version, key="25")
    assert (punk.path, punk.depth, punk.parent.key, punk.is_leaf) == ("Rock/Punk", 1, "12", True)

    project = ProjectFactory(taxonomy_version=first.version)
    clip = ClipFactory(project=project)
    index = TaxonomyIndex.for_version(first.version)
    ann, _ = annotation_create(
        clip=clip, index=index, explicit_node_ids=[punk.id], source="user:test"
    )

    same = taxonomy_import(name="FMA", data=FMA_V1, filename="genres.csv")
    assert not same.created and same.version == first.version

    second = taxonomy_import(name="FMA", data=FMA_V2, filename="genres.csv")
    assert second.created and second.version.number == 2
    changes = second.version.changes
    assert changes["added"] == ["70"] and changes["removed"] == ["97"]
    assert changes["renamed"] == [{"key": "25", "old_name": "Punk", "new_name": "Punk Rock"}]
    assert changes["moved"] == [{"key": "31", "old_parent": "12", "new_parent": "4"}]
    assert "1 added, 1 renamed, 1 moved, 1 removed" in second.summary()
    # The old annotation still points at v1 and its v1 nodes.
    ann.refresh_from_db()
    assert ann.taxonomy_version == first.version
    assert set(ann.labels.values_list("node__path", flat=True)) == {"Rock", "Rock/Punk"}
    assert TaxonomyVersion.objects.filter(taxonomy__name="FMA").count() == 2


def test_dag_keeps_every_parent_and_closure_follows_them() -> None:
    ontology = [
        {"id": "/m/music", "name": "Music", "child_ids": ["/m/genre", "/m/inst"]},
        {"id": "/m/genre", "name": "Music genre", "child_ids": ["/m/electronic"]},
        {"id": "/m/inst", "name": "Musical instrument", "child_ids": ["/m/synth"]},
        {"id": "/m/electronic", "name": "Electronic music", "child_ids": ["/m/synth"]},
        {"id": "/m/synth", "name": "Synthesizer", "child_ids": []},
    ]
    result = taxonomy_import(name="AS", data=json.dumps(ontology), filename="ontology.json")
    assert result.version.is_dag
    synth = TaxonomyNode.objects.get(version=result.version, key="/m/synth")
    assert synth.parent.key == "/m/inst"  # the first parent in file order is primary
    assert [p.key for p in synth.extra_parents.all()] == ["/m/electronic"]
    index = TaxonomyIndex.for_version(result.version)
    closed = {index.by_id[i].key for i in index.closure([synth.id])}
    assert closed == {"/m/synth", "/m/inst", "/m/electronic", "/m/genre", "/m/music"}


def test_bad_file_is_rejected_with_the_line_and_nothing_written(tmp_path: Path) -> None:
    bad = tmp_path / "genres.csv"
    bad.write_text(FMA_V1 + "98,1,999,Orphan,12\n")
    with pytest.raises(CommandError, match=r"genres.csv: .*line 7.*999"):
        call_command("import_taxonomy", str(bad), "--name", "Bad")
    assert not TaxonomyVersion.objects.filter(taxonomy__name="Bad").exists()
    with pytest.raises(TaxonomyFormatError):
        taxonomy_import(
            name="Cyclic", data="genre_id,#tracks,parent,title,top_level\n1,0,2,A,1\n2,0,1,B,1\n"
        )


def test_command_reports_changes(tmp_path: Path) -> None:
    path = tmp_path / "genres.csv"
    path.write_text(FMA_V1)
    call_command("import_taxonomy", str(path), "--name", "FMA", stdout=StringIO())
    path.write_text(FMA_V2)
    out = StringIO()
    call_command("import_taxonomy", str(path), "--name", "FMA", stdout=out)
    assert "FMA v2: 5 nodes" in out.getvalue()
    assert "renamed: 25 Punk Punk Rock" in out.getvalue()
    assert Annotation.objects.count() == 0


def test_names_with_slashes_resolve_escaped_and_plain() -> None:
    data = "genre_id,#tracks,parent,title,top_level\n4,8,0,Jazz,4\n97,2,4,Big Band/Swing,4\n"
    version = taxonomy_import(name="FMA slash", data=data, filename="genres.csv").version
    index = TaxonomyIndex.for_version(version)
    node = TaxonomyNode.objects.get(version=version, key="97")
    assert node.path == "Jazz/Big Band\\/Swing"
    assert index.lookup("Jazz/Big Band\\/Swing") == node
    assert index.lookup("jazz / big band/swing") == node
    assert index.lookup("97") == node
