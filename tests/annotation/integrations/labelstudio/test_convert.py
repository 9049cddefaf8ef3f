"""Pure conversions: no database, no network."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import pytest

from annotation.integrations.labelstudio.convert import (
    LabelStudioFormatError,
    argmax_path,
    label_config_from_taxonomy,
    labels_from_taxonomy_paths,
    prediction_from_probs,
    tasks_from_clips,
    taxonomy_paths_from_result,
)


@dataclass
class Node:
    id: int
    key: str
    name: str
    parent_id: int | None
    index: int


def tree(paths: list[str]) -> list[Node]:
    nodes: dict[str, Node] = {}
    for path in paths:
        parts = path.split("/")
        for d in range(1, len(parts) + 1):
            p = "/".join(parts[:d])
            if p not in nodes:
                parent = nodes.get("/".join(parts[: d - 1])) if d > 1 else None
                i = len(nodes)
                nodes[p] = Node(i + 100, p, parts[d - 1], parent.id if parent else None, i)
    return list(nodes.values())


def choices(el: ET.Element) -> list[ET.Element]:
    return el.findall("Choice")


def test_config_is_valid_xml_with_nested_choices() -> None:
    nodes = tree(["Rock/Punk", "Rock/Metal", "Jazz/Bebop", "Jazz"])
    root = ET.fromstring(label_config_from_taxonomy(nodes))
    assert root.tag == "View"
    audio = root.find("Audio")
    assert audio is not None and audio.attrib == {"name": "audio", "value": "$audio"}
    taxonomy = root.find("Taxonomy")
    assert taxonomy is not None
    assert taxonomy.get("name") == "genre" and taxonomy.get("toName") == "audio"
    assert taxonomy.get("maxUsages") is None  # multi-select is LS's default
    tops = choices(taxonomy)
    assert [(c.get("value"), c.get("alias")) for c in tops] == [("Rock", "Rock"), ("Jazz", "Jazz")]
    assert [c.get("alias") for c in choices(tops[0])] == ["Rock/Punk", "Rock/Metal"]
    assert [c.get("value") for c in choices(tops[1])] == ["Bebop"]


def test_config_escapes_names_and_drops_xml_invalid_characters() -> None:
    nasty = "R&B <\"neo\">\x01 'soul'"
    nodes = [Node(1, "k&<1>", nasty, None, 0), Node(2, "k2", "Drum & Bass", 1, 1)]
    xml = label_config_from_taxonomy(nodes)
    assert "&amp;" in xml and "&lt;" in xml
    top = ET.fromstring(xml).find("Taxonomy/Choice")
    assert top is not None
    assert top.get("value") == "R&B <\"neo\"> 'soul'"
    assert top.get("alias") == "k&<1>"
    assert top.find("Choice").get("value") == "Drum & Bass"  # type: ignore[union-attr]


def test_config_for_a_large_deep_tree() -> None:
    # 12 roots x 8 x 6 = 576 leaves, 684 nodes; plus one 40-deep chain.
    paths = [f"G{a}/S{a}.{b}/T{a}.{b}.{c}" for a in range(12) for b in range(8) for c in range(6)]
    paths.append("/".join(f"D{d}" for d in range(40)))
    nodes = tree(paths)
    assert len(nodes) > 500
    root = ET.fromstring(label_config_from_taxonomy(nodes))
    all_choices = root.findall(".//Choice")
    assert len(all_choices) == len(nodes)
    assert len({c.get("alias") for c in all_choices}) == len(nodes)
    deepest = root.find("Taxonomy" + "/Choice" * 40)
    assert deepest is not None and deepest.get("value") == "D39"


def test_config_rejects_empty_or_broken_versions() -> None:
    with pytest.raises(ValueError, match="no nodes"):
        label_config_from_taxonomy([])
    with pytest.raises(ValueError, match="parent is not in the version"):
        label_config_from_taxonomy([Node(1, "a", "A", 99, 0)])


def test_tasks_carry_audio_url_and_clip_id() -> None:
    @dataclass
    class C:
        id: int
        original_name: str = ""
        external_id: str = ""

    clips = [C(7, "Rock_Punk_7.wav"), C(8)]
    tasks = tasks_from_clips(clips, audio_url=lambda c: f"https://r/{c.id}", blind=False)
    assert tasks[0] == {
        "data": {"audio": "https://r/7", "refrain_clip_id": 7, "refrain_name": "Rock_Punk_7.wav"}
    }
    assert tasks[1]["data"]["refrain_name"] == "clip 8"
    # Blind projects: Label Studio's annotators see task data, so no file name goes there.
    blind = tasks_from_clips(clips, audio_url=lambda c: f"https://r/{c.id}")
    assert [t["data"]["refrain_name"] for t in blind] == ["clip 7", "clip 8"]
    assert "Rock_Punk" not in str(blind)


def test_prediction_follows_the_argmax_path() -> None:
    nodes = tree(["Rock/Punk", "Rock/Metal", "Jazz/Bebop"])
    # index: 0 Rock, 1 Rock/Punk, 2 Rock/Metal, 3 Jazz, 4 Jazz/Bebop
    probs = np.array([0.8, 0.3, 0.6, 0.2, 0.1])
    pred = prediction_from_probs(probs, nodes=nodes, model_version="refrain-7")
    assert pred["model_version"] == "refrain-7"
    assert pred["score"] == pytest.approx(0.6)
    (result,) = pred["result"]
    assert result["type"] == "taxonomy" and result["from_name"] == "genre"
    assert result["value"] == {"taxonomy": [["Rock", "Rock/Metal"]]}
    stopped = prediction_from_probs(probs, nodes=nodes, model_version="m", stop_below=0.7)
    assert stopped["result"][0]["value"]["taxonomy"] == [["Rock"]]
    assert stopped["score"] == pytest.approx(0.8)


def test_prediction_checks_shape_and_range() -> None:
    nodes = tree(["Rock/Punk"])
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        prediction_from_probs(np.zeros(3), nodes=nodes, model_version="m")
    with pytest.raises(ValueError, match="finite"):
        prediction_from_probs(np.array([np.nan, 0.1]), nodes=nodes, model_version="m")


def test_argmax_path_descends_to_a_leaf() -> None:
    probs = np.array([0.1, 0.9, 0.5, 0.7])
    assert argmax_path(probs, roots=[0, 1], children={1: [2, 3]}) == [1, 3]


def test_result_paths_and_labels() -> None:
    result = [
        {"from_name": "other", "type": "choices", "value": {"choices": ["x"]}},
        {
            "from_name": "genre",
            "to_name": "audio",
            "type": "taxonomy",
            "value": {"taxonomy": [["Rock", "Rock/Punk"], ["Jazz"]]},
        },
        {
            "from_name": "genre",
            "type": "taxonomy",
            "value": {"taxonomy": [["Funk / Soul", "Disco"]]},
        },
    ]
    paths = taxonomy_paths_from_result(result)
    assert paths == [["Rock", "Rock/Punk"], ["Jazz"], ["Funk / Soul", "Disco"]]
    keys = {"Rock", "Rock/Punk", "Jazz"}
    # Alias paths give keys; name paths give escaped full paths ("/" inside a name escaped).
    assert labels_from_taxonomy_paths(paths, known_keys=keys) == [
        "Rock/Punk",
        "Jazz",
        "Funk \\/ Soul/Disco",
    ]


@pytest.mark.parametrize(
    "result",
    [
        {"not": "a list"},
        [{"from_name": "genre", "value": {"choices": ["x"]}}],
        [{"from_name": "genre", "value": {"taxonomy": [[]]}}],
        [{"from_name": "genre", "value": {"taxonomy": ["Rock"]}}],
        [{"from_name": "genre", "value": {"taxonomy": [["Rock", 3]]}}],
    ],
)
def test_malformed_results_are_format_errors(result: object) -> None:
    with pytest.raises(LabelStudioFormatError):
        taxonomy_paths_from_result(result)
