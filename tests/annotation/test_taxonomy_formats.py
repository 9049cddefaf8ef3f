"""Taxonomy parsing and diffing: pure Python, no database."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from taxonomy.diff import Moved, ParentsChanged, Renamed, diff_taxonomies
from taxonomy.formats import (
    MAX_DEPTH,
    MAX_NAME_LENGTH,
    MAX_NODES,
    ParsedNode,
    ParsedTaxonomy,
    TaxonomyFormatError,
    detect_format,
    join_path,
    parse_taxonomy,
    split_path,
)

DATA = Path(__file__).parent / "data" / "taxonomies"


def parse_file(name: str, **options: object) -> ParsedTaxonomy:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")  # PyYAML comes in transitively; YAML support needs it
    return parse_taxonomy((DATA / name).read_bytes(), filename=name, **options)  # type: ignore[arg-type]


def assert_parents_first(taxonomy: ParsedTaxonomy) -> None:
    seen: set[str] = set()
    for node in taxonomy.nodes:
        assert set(node.parent_keys) <= seen, node
        seen.add(node.key)


# -- good files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "count"),
    [
        ("fma_genres.csv", "fma-csv", 7),
        ("fma_genres_v2.csv", "fma-csv", 7),
        ("nested_keyed.json", "nested-json", 6),
        ("nested_paths.json", "nested-json", 5),
        ("paths.txt", "paths", 8),
        ("paths.json", "paths", 5),
        ("audioset_ontology.json", "audioset-json", 10),
        ("audioset_subtree.csv", "audioset-csv", 5),
        ("discogs.csv", "discogs", 7),
        ("discogs.txt", "discogs", 6),
        ("medleydb.yaml", "yaml-tree", 12),
    ],
)
def test_good_file_is_detected_and_parsed(name: str, fmt: str, count: int) -> None:
    if fmt == "yaml-tree":
        pytest.importorskip("yaml")
    data = (DATA / name).read_bytes()
    assert detect_format(data, name) == fmt
    taxonomy = parse_taxonomy(data, filename=name)
    assert taxonomy.format == fmt
    assert len(taxonomy) == count
    assert_parents_first(taxonomy)
    # Detection does not need the file name, except for YAML.
    if fmt != "yaml-tree":
        assert detect_format(data, "") == fmt
    # Explicit format gives the same result.
    assert parse_taxonomy(data, format=fmt) == taxonomy


def test_fma_csv_tree() -> None:
    taxonomy = parse_file("fma_genres.csv")
    # Depth-first from the roots in file order; Avant-Garde (line 2) waits for its parent 38.
    assert taxonomy.keys() == ["2", "651", "12", "25", "85", "38", "1"]
    assert taxonomy.roots() == ["2", "12", "38"]
    punk = taxonomy.node("25")
    assert punk == ParsedNode("25", "Punk", ("12",), 5, {"#tracks": 400})
    assert taxonomy.path_of("85") == "Rock/Punk/Hardcore, Oi!"
    assert taxonomy.depth_of("85") == 2
    assert taxonomy.depth_of("12") == 0
    assert taxonomy.children_of("12") == ["25"]
    assert taxonomy.ancestors_of("85") == ["12", "25"]
    assert taxonomy.parent_indices() == [-1, 0, -1, 2, 3, -1, 5]
    # A "/" inside a name is escaped in paths, and looked up the same way.
    assert taxonomy.path_of("651") == "International/Old-Time \\/ Historic"
    assert taxonomy.key_for_path("International/Old-Time \\/ Historic") == "651"
    assert taxonomy.key_for_path("Rock / Punk") == "25"
    assert taxonomy.key_for_path("Rock/Pank") is None
    assert taxonomy.max_depth == 2


def test_nested_json_keys_lines_and_extra() -> None:
    taxonomy = parse_file("nested_keyed.json")
    # The unnamed-key "root" wrapper is a container, not a node.
    assert taxonomy.roots() == ["1", "4"]
    chorale = taxonomy.node("3")
    assert chorale.name == "Bach chorale"
    assert chorale.parent_keys == ("2",)
    assert chorale.source_line == 9
    assert chorale.extra == {"n_clips": 250, "primary_leaf": True}
    assert taxonomy.path_of("3") == "Art music/Baroque/Bach chorale"
    assert taxonomy.node("4").source_line == 13

    unkeyed = parse_file("nested_paths.json")
    assert unkeyed.keys() == [
        "Rock",
        "Rock/Punk",
        "Rock/Hard Rock",
        "Jazz",
        "Jazz/Big Band\\/Swing",
    ]
    assert unkeyed.node("Rock/Hard Rock").extra == {"description": "loud"}
    assert unkeyed.node("Jazz/Big Band\\/Swing").name == "Big Band/Swing"


def test_paths_create_missing_ancestors() -> None:
    taxonomy = parse_file("paths.txt")
    assert taxonomy.keys() == [
        "Rock",
        "Rock/Punk",
        "Rock/Punk/Hardcore",
        "Jazz",
        "Jazz/Big Band\\/Swing",
        "Electronic",
        "Electronic/Techno",
        "Electronic/Techno/Detroit techno",
    ]
    # Ancestors are created at the first line that needs them.
    assert taxonomy.node("Rock").source_line == 2
    assert taxonomy.node("Electronic/Techno").source_line == 7
    assert taxonomy.depth_of("Electronic/Techno/Detroit techno") == 2
    assert taxonomy.node("Jazz/Big Band\\/Swing").name == "Big Band/Swing"

    from_json = parse_file("paths.json")
    assert from_json.keys() == [
        "Rock",
        "Rock/Punk",
        "Rock/Hard Rock",
        "Jazz",
        "Jazz/Big Band\\/Swing",
    ]
    assert from_json.node("Rock/Hard Rock").source_line == 3
    assert from_json.node("Jazz/Big Band\\/Swing").source_line == 4


def test_audioset_json_is_a_dag_with_file_order_primary_parents() -> None:
    taxonomy = parse_file("audioset_ontology.json")
    assert taxonomy.roots() == ["/m/0dgw9r", "/m/04rlf", "/t/dd00041"]
    # Cowbell is listed by Percussion (line 7) then Bell (line 8): Percussion is primary.
    cowbell = taxonomy.node("/m/0239kh")
    assert cowbell.parent_keys == ("/m/0l14md", "/m/0395lw")
    assert cowbell.source_line == 6
    assert cowbell.extra == {"description": "A hand-held bell.", "restrictions": []}
    assert taxonomy.node("/m/0395lw").parent_keys == ("/m/04szw", "/t/dd00041")
    assert taxonomy.node("/m/0l14jd").parent_keys == ("/m/015lz1", "/m/04szw")
    assert taxonomy.path_of("/m/0239kh") == "Music/Musical instrument/Percussion/Cowbell"
    assert taxonomy.path_of("/m/0l14jd") == "Human sounds/Singing/Choir"
    assert taxonomy.depth_of("/m/0239kh") == 3
    # A multi-parent node comes after all of its parents.
    assert taxonomy.keys() == [
        "/m/0dgw9r",
        "/m/015lz1",
        "/m/04rlf",
        "/m/04szw",
        "/m/0l14md",
        "/m/0l14jd",
        "/m/0kpv1t",
        "/t/dd00041",
        "/m/0395lw",
        "/m/0239kh",
    ]
    assert taxonomy.ancestors_of("/m/0239kh") == [
        "/m/04rlf",
        "/m/04szw",
        "/m/0l14md",
        "/t/dd00041",
        "/m/0395lw",
    ]


def test_audioset_root_selects_the_music_subtree() -> None:
    music = parse_file("audioset_ontology.json", root="/m/04rlf")
    assert music.format == "audioset-json"
    assert music.roots() == ["/m/04rlf"]
    assert len(music) == 7
    assert_parents_first(music)
    # Parents outside the subtree are dropped: Choir keeps only Musical instrument.
    assert music.node("/m/0l14jd").parent_keys == ("/m/04szw",)
    assert music.path_of("/m/0l14jd") == "Music/Musical instrument/Choir"
    assert music.node("/m/0395lw").parent_keys == ("/m/04szw",)
    assert music.node("/m/0239kh").parent_keys == ("/m/0l14md", "/m/0395lw")
    # The same subtree from the CSV export is the same taxonomy.
    subtree_csv = parse_file("audioset_subtree.csv")
    assert subtree_csv.node("/m/0239kh").parent_keys == ("/m/0l14md", "/m/0395lw")
    assert subtree_csv.node("/m/0395lw").extra == {"restrictions": ["abstract", "blacklist"]}
    # A root given as a path works too.
    assert parse_file("audioset_ontology.json", root="Music/Musical instrument").roots() == [
        "/m/04szw"
    ]


def test_discogs_lists() -> None:
    taxonomy = parse_file("discogs.csv")
    assert taxonomy.roots() == ["Blues", "Funk \\/ Soul", "Hip Hop"]
    disco = taxonomy.node("Funk \\/ Soul/Disco")
    assert disco.name == "Disco"
    assert disco.parent_keys == ("Funk \\/ Soul",)
    assert disco.extra == {"label": "Funk / Soul---Disco", "index": 2}
    assert taxonomy.node("Funk \\/ Soul").name == "Funk / Soul"
    assert taxonomy.node("Hip Hop/Cut-up\\/DJ").name == "Cut-up/DJ"
    assert taxonomy.node("Blues").extra == {}

    lines = parse_file("discogs.txt")
    assert lines.keys() == [
        "Blues",
        "Blues/Boogie Woogie",
        "Electronic",
        "Electronic/Techno",
        "Electronic/House",
        "Latin",
    ]
    assert lines.node("Electronic/House").source_line == 4


def test_yaml_tree() -> None:
    taxonomy = parse_file("medleydb.yaml")
    assert taxonomy.roots() == ["strings", "electric", "voices", "other"]
    assert taxonomy.children_of("strings/bowed") == ["strings/bowed/violin", "strings/bowed/cello"]
    fx = taxonomy.node("electric/electronic/fx\\/processed sound")
    assert fx.name == "fx/processed sound"
    assert fx.source_line == 10
    assert taxonomy.depth_of(fx.key) == 2


def test_bytes_with_bom_and_crlf() -> None:
    data = "\ufeffgenre_id,#tracks,parent,title,top_level\r\n1,5,0,Rock,1\r\n2,3,1,Punk,1\r\n"
    taxonomy = parse_taxonomy(data.encode())
    assert taxonomy.format == "fma-csv"
    assert taxonomy.path_of("2") == "Rock/Punk"


# -- bad files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message", "line", "node"),
    [
        (
            "bad_fma_cycle.csv",
            "line 3: parent cycle: genre 12 'Punk' -> genre 13 'Hardcore' -> genre 12 'Punk'",
            3,
            "12",
        ),
        ("bad_fma_unknown_parent.csv", "line 7: unknown parent 999 for genre 12 'Punk'", 7, "12"),
        ("bad_fma_duplicate_id.csv", "line 4: duplicate genre_id 12 (first at line 3)", 4, "12"),
        ("bad_fma_empty_name.csv", "line 3: empty name for genre 12", 3, "12"),
        (
            "bad_fma_columns.csv",
            "line 3: expected 5 columns (genre_id,#tracks,parent,title,top_level), got 4",
            3,
            None,
        ),
        ("bad_fma_non_integer.csv", "line 3: genre_id '12a' is not an integer", 3, None),
        (
            "bad_fma_duplicate_sibling.csv",
            "line 4: duplicate name under genre 1 'Rock': genre 13 'punk' and genre 12 'Punk' "
            "(line 3)",
            4,
            "13",
        ),
        (
            "bad_fma_top_level.csv",
            "line 4: top_level 2 of genre 12 'Punk' is not its root genre 1",
            4,
            "12",
        ),
        (
            "bad_nested_invalid.json",
            "line 5 column 5: invalid JSON: Expecting ',' delimiter",
            5,
            None,
        ),
        (
            "bad_nested_duplicate_key.json",
            "line 6: duplicate genre_id 2 for node 'Folk song/German' (first at line 3)",
            6,
            "2",
        ),
        ("bad_nested_empty_name.json", "line 3: empty name for node 7", 3, "7"),
        (
            "bad_nested_duplicate_sibling.json",
            "line 4: duplicate name under node r 'Rock': node p2 'Punk' and node p1 'Punk' (line 3)",
            4,
            "p2",
        ),
        ("bad_paths_empty_segment.txt", "line 3: empty name in path 'Rock//Hardcore'", 3, None),
        (
            "bad_paths_duplicate.txt",
            "line 4: duplicate path 'Rock/Punk' (first at line 2)",
            4,
            "Rock/Punk",
        ),
        (
            "bad_paths_duplicate_sibling.txt",
            "line 2: duplicate name under node 'Rock': node 'Rock/PUNK' and node 'Rock/Punk' "
            "(line 1)",
            2,
            "Rock/PUNK",
        ),
        (
            "bad_paths_not_strings.json",
            "line 3: matches no taxonomy format: item 1 of the JSON list is an object but item 0 "
            "is a path",
            3,
            None,
        ),
        (
            "bad_audioset_cycle.json",
            "line 3: parent cycle: node /m/a 'A' -> node /m/b 'B' -> node /m/a 'A'",
            3,
            "/m/a",
        ),
        (
            "bad_audioset_unknown_child.json",
            "line 4: node /m/0kpv1t 'Music genre' lists unknown child /m/nope",
            4,
            "/m/0kpv1t",
        ),
        (
            "bad_audioset_duplicate_id.json",
            "line 4: duplicate id /m/04rlf (first at line 2)",
            4,
            "/m/04rlf",
        ),
        ("bad_audioset_empty_name.json", "line 3: empty name for node /m/04szw", 3, "/m/04szw"),
        (
            "bad_audioset_subtree_conflict.csv",
            "line 7: node /m/0239kh is named 'Cow bell' here but 'Cowbell' at line 5",
            7,
            "/m/0239kh",
        ),
        (
            "bad_audioset_subtree_unknown_parent.csv",
            "line 4: unknown parent /m/0nope for node /m/0l14md 'Percussion'",
            4,
            "/m/0l14md",
        ),
        (
            "bad_discogs_mismatch.csv",
            "line 3: genre 'Blue' does not match label 'Blues---Chicago Blues'",
            3,
            None,
        ),
        (
            "bad_discogs_line.txt",
            "line 3: expected 'Genre---Style' or 'Genre', got 'Electronic---Techno---Detroit'",
            3,
            None,
        ),
        ("bad_discogs_index.csv", "line 3: index 'one' is not an integer", 3, None),
        (
            "bad_yaml_scalar.yaml",
            "line 4: expected a list or mapping under 'winds', got 'flute'",
            4,
            None,
        ),
        (
            "bad_yaml_invalid.yaml",
            "line 4 column 4: invalid YAML: expected <block end>, but found "
            "'<block sequence start>'",
            4,
            None,
        ),
        (
            "bad_yaml_duplicate_sibling.yaml",
            "line 4: duplicate name under node 'strings/bowed': node 'strings/bowed/Violin' and "
            "node 'strings/bowed/violin' (line 3)",
            4,
            "strings/bowed/Violin",
        ),
        (
            "bad_unknown_header.csv",
            "line 1: matches no taxonomy format: CSV header 'genre,parent' is none of fma-csv "
            "(genre_id,parent,title), audioset-csv (id,name,parent_id), discogs (label)",
            1,
            None,
        ),
        (
            "bad_unknown.json",
            "line 1: matches no taxonomy format: an object without a name (expected "
            "{name, children} objects or AudioSet {id, name, child_ids} objects)",
            1,
            None,
        ),
    ],
)
def test_bad_file_is_rejected_naming_line_and_node(
    name: str, message: str, line: int, node: str | None
) -> None:
    with pytest.raises(TaxonomyFormatError) as caught:
        parse_file(name)
    assert str(caught.value) == message
    assert caught.value.line == line
    assert caught.value.node == node


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ("", {}, "empty file"),
        ("  \n\n", {}, "empty file"),
        ("[]", {}, "line 1: no nodes: empty JSON list"),
        ("# only a comment\n", {"format": "paths"}, "no nodes"),
        (
            "Rock\n",
            {"format": "xml"},
            "unknown format 'xml'; expected one of fma-csv, "
            "audioset-csv, discogs, nested-json, audioset-json, paths, yaml-tree",
        ),
        ("Rock\nRock/Punk\n", {"root": "Jazz"}, "root 'Jazz' is not a node of this taxonomy"),
        ("Rock\n\x00\x01", {}, "matches no taxonomy format: binary data"),
        (
            "Rock\n" + "x" * (MAX_NAME_LENGTH + 1),
            {},
            f"line 2: name of a root node is longer than {MAX_NAME_LENGTH} characters",
        ),
        (
            "Rock/Pu\tnk\n",
            {},
            "line 1: name of a node under 'Rock' contains a control character: 'Pu\\tnk'",
        ),
        ("/".join(["a"] * (MAX_DEPTH + 2)), {}, f"line 1: path deeper than {MAX_DEPTH} levels"),
        (
            '[{"name": "a", "name": "b"}]',
            {},
            "line 1: invalid JSON: duplicate field 'name' in one object",
        ),
        (
            '[{"name": "Rock", "children": {"name": "Punk"}}]',
            {},
            "line 1: children of node 'Rock' must be a list",
        ),
        (
            '[{"name": "Rock", "id": true}]',
            {},
            "line 1: id of node 'Rock' must be a string or an integer",
        ),
        ('[{"name": 7}]', {}, "line 1: name of a root node must be a string, not int"),
        (
            '[{"id": "/m/a", "name": "A", "child_ids": ["/m/a"]}]',
            {},
            "line 1: parent cycle: node /m/a 'A' -> node /m/a 'A'",
        ),
        (
            '[{"id": "/m/a", "name": "A", "child_ids": ["/m/b", "/m/b"]},\n'
            ' {"id": "/m/b", "name": "B"}]',
            {},
            "line 1: node /m/a 'A' lists child /m/b twice",
        ),
        (
            "genre_id,parent,title\n0,0,Rock\n",
            {},
            "line 2: genre_id 0 must be positive (parent 0 means a root)",
        ),
        (
            "genre_id,parent,title\n1,0,Rock\n1,0,Jazz\n",
            {},
            "line 3: duplicate genre_id 1 (first at line 2)",
        ),
        ('genre_id,parent,title\n1,0,"Ro\n', {}, "line 2: malformed CSV: unexpected end of data"),
        (
            "Rock\nJazz\nrock\n",
            {},
            "line 3: duplicate name among the roots: node 'rock' and node 'Rock' (line 1)",
        ),
    ],
)
def test_bad_input_is_rejected(data: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(TaxonomyFormatError) as caught:
        parse_taxonomy(data, **options)
    assert str(caught.value) == message


def test_non_utf8_bytes_name_the_line() -> None:
    with pytest.raises(TaxonomyFormatError, match=r"^line 2: not UTF-8 text \(byte 0xff\)$"):
        parse_taxonomy(b"Rock\nPunk \xff\n")


def test_node_limit() -> None:
    names = "\n".join(f"genre {i}" for i in range(MAX_NODES + 1))
    with pytest.raises(
        TaxonomyFormatError, match=rf"^line {MAX_NODES + 1}: more than {MAX_NODES} nodes$"
    ):
        parse_taxonomy(names)


def test_large_audioset_dag_parses_quickly() -> None:
    # 20k nodes, most with two parents among the earlier ones: a stress test of the DAG path.
    n = 20_000
    children: list[list[str]] = [[] for _ in range(n)]
    for i in range(1, n):
        for parent in sorted({i // 2, i - 1}):
            children[parent].append(f"/m/{i}")
    nodes = [{"id": f"/m/{i}", "name": f"sound {i}", "child_ids": children[i]} for i in range(n)]
    data = json.dumps(nodes, indent=1)
    started = time.perf_counter()
    taxonomy = parse_taxonomy(data)
    assert time.perf_counter() - started < 15  # ~0.5 s; quadratic work would take minutes
    assert len(taxonomy) == n
    assert taxonomy.node("/m/9").parent_keys == ("/m/4", "/m/8")
    assert_parents_first(taxonomy)


# -- paths, construction, diff ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [["Rock", "Punk"], ["Funk / Soul", "Disco"], ["a\\b", "c/d\\", "e"], ["Hip Hop", "Cut-up/DJ"]],
)
def test_join_and_split_path_round_trip(names: list[str]) -> None:
    assert split_path(join_path(names)) == names


def test_from_nodes_sorts_and_validates() -> None:
    nodes = [
        ParsedNode("3", "Punk", ("1",)),
        ParsedNode("1", "Rock"),
        ParsedNode("4", "Hardcore", ("3", "1")),
    ]
    taxonomy = ParsedTaxonomy.from_nodes(nodes)
    assert taxonomy.keys() == ["1", "3", "4"]
    assert taxonomy.path_of("4") == "Rock/Punk/Hardcore"
    with pytest.raises(TaxonomyFormatError, match="unknown parent 9 for node 5 'Jazz'"):
        ParsedTaxonomy.from_nodes([*nodes, ParsedNode("5", "Jazz", ("9",))])
    # Direct construction insists on parents first.
    with pytest.raises(
        TaxonomyFormatError, match="parent '1' of node '3' is unknown or comes after"
    ):
        ParsedTaxonomy(tuple(nodes), "custom")


def test_diff_fma_versions() -> None:
    old = parse_file("fma_genres.csv")
    new = parse_file("fma_genres_v2.csv")
    diff = diff_taxonomies(old, new)
    assert diff.added == ("76",)
    assert diff.removed == ("651",)
    assert diff.renamed == (Renamed("25", "Punk", "Punk Rock"),)
    assert diff.moved == (Moved("85", "25", "12"),)
    assert diff.parents_changed == ()
    assert diff.extra_changed == ("12",)  # #tracks 900 -> 950
    assert diff.structure_changed
    assert diff.summary() == ("1 added, 1 removed, 1 renamed, 1 moved, 1 with other fields changed")
    same = diff_taxonomies(old, parse_file("fma_genres.csv"))
    assert not same
    assert same.summary() == "0 added, 0 removed, 0 renamed, 0 moved"


def test_diff_dag_parents() -> None:
    old = parse_file("audioset_ontology.json")
    edited = json.loads((DATA / "audioset_ontology.json").read_text())
    by_id = {node["id"]: node for node in edited}
    by_id["/t/dd00041"]["child_ids"] = []  # Bell loses its second parent
    by_id["/m/0l14md"]["child_ids"] = []  # Cowbell's primary parent becomes Bell
    by_id["/m/04szw"]["child_ids"].append("/m/0239kh")  # ... and it gains Musical instrument
    new = parse_taxonomy(json.dumps(edited))
    diff = diff_taxonomies(old, new)
    assert diff.moved == (Moved("/m/0239kh", "/m/0l14md", "/m/04szw"),)
    assert diff.parents_changed == (
        ParentsChanged("/m/0395lw", ("/m/04szw", "/t/dd00041"), ("/m/04szw",)),
    )
    assert diff.added == diff.removed == diff.renamed == ()
