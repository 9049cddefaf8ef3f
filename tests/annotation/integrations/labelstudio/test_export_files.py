"""Label Studio export files read offline: JSON, and JSON_MIN and CSV as Label Studio's own converter
(label_studio_sdk.converter) writes them from that JSON, all store the same annotations once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from label_studio_sdk.converter import Converter

from annotation.integrations.labelstudio.convert import label_config_from_taxonomy
from annotation.integrations.labelstudio.export_files import export_format_sniff
from annotation.integrations.labelstudio.services import ls_import_export_file
from annotation.models import Annotation, LabelStudioLink
from annotation.selectors import TaxonomyIndex
from tests.annotation.integrations.labelstudio.conftest import stored_annotations
from tests.factories import ClipFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def _link(ls_project_id: int = 5) -> LabelStudioLink:
    return LabelStudioLink.objects.create(
        project=ProjectFactory(),
        base_url="http://ls.example:8080",
        ls_project_id=ls_project_id,
        api_key="token",
        webhook_secret="s3cret",
    )


def _result(paths: list[list[str]]) -> list[dict[str, Any]]:
    value = {"taxonomy": paths}
    return [{"from_name": "genre", "to_name": "audio", "type": "taxonomy", "value": value}]


def _export(clip_ids: list[int]) -> list[dict[str, Any]]:
    """A JSON export as Label Studio writes it: three tasks, one with a cancelled annotation."""
    a, b, c = clip_ids
    return [
        {
            "id": 101,
            "data": {"audio": "http://r/a", "refrain_clip_id": a, "refrain_name": "clip"},
            "annotations": [
                {
                    "id": 11,
                    "result": _result([["Rock", "Rock/Punk"]]),
                    "completed_by": {"id": 3, "email": "ann@ls.example"},
                    "was_cancelled": False,
                    "lead_time": 4.0,
                    "created_at": "2026-12-01T10:00:00Z",
                    "updated_at": "2026-12-01T10:00:00Z",
                }
            ],
        },
        {
            "id": 102,
            "data": {"audio": "http://r/b", "refrain_clip_id": b, "refrain_name": "clip"},
            "annotations": [
                {
                    "id": 12,
                    "result": _result([["Jazz", "Free Jazz"], ["Rock", "Rock/Metal"]]),
                    "completed_by": {"id": 4, "email": "other@ls.example"},
                    "was_cancelled": False,
                    "lead_time": 2.0,
                    "created_at": "2026-12-01T10:01:00Z",
                    "updated_at": "2026-12-01T10:01:00Z",
                },
                {
                    "id": 13,
                    "result": [],
                    "completed_by": {"id": 3, "email": "ann@ls.example"},
                    "was_cancelled": True,
                    "created_at": "2026-12-01T10:02:00Z",
                    "updated_at": "2026-12-01T10:02:00Z",
                },
            ],
        },
        {
            "id": 103,
            "data": {"audio": "http://r/c", "refrain_clip_id": c, "refrain_name": "clip"},
            "annotations": [
                {
                    "id": 14,
                    "result": _result([["Jazz"]]),
                    "completed_by": {"id": 3, "email": "ann@ls.example"},
                    "was_cancelled": False,
                    "lead_time": 1.0,
                    "created_at": "2026-12-01T10:03:00Z",
                    "updated_at": "2026-12-01T10:03:00Z",
                }
            ],
        },
    ]


@pytest.mark.parametrize("fmt", ["json", "json_min", "csv"])
def test_each_format_stores_the_same_annotations_once(fmt: str, tmp_path: Path) -> None:
    link = _link()
    clips = [ClipFactory(project=link.project) for _ in range(3)]
    export = _export([c.id for c in clips])
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export))
    if fmt == "json":
        path = source
    else:
        index = TaxonomyIndex.for_version(link.project.taxonomy_version)
        converter = Converter(
            config=label_config_from_taxonomy(index.nodes),
            project_dir=None,
            download_resources=False,
        )
        out = tmp_path / fmt
        if fmt == "json_min":
            converter.convert_to_json_min(str(source), str(out), is_dir=False)
            path = out / "result.json"
        else:
            converter.convert_to_csv(str(source), str(out), is_dir=False, sep=",")
            path = out / "result.csv"
    text = path.read_text()
    assert export_format_sniff(text, path.name) == fmt
    first = ls_import_export_file(link=link, text=text, filename=path.name)
    assert first.errors == [] and first.created == 3
    assert stored_annotations(link) == {
        (clips[0].id, "labelstudio:ann@ls.example", frozenset({"Rock/Punk"})),
        (clips[1].id, "labelstudio:other@ls.example", frozenset({"Jazz/Free Jazz", "Rock/Metal"})),
        (clips[2].id, "labelstudio:ann@ls.example", frozenset({"Jazz"})),
    }
    again = ls_import_export_file(link=link, text=text, filename=path.name)
    assert (again.created, again.existing) == (0, 3)
    assert Annotation.objects.filter(clip__project=link.project).count() == 3


def test_bad_records_are_named_and_the_rest_go_on(tmp_path: Path) -> None:
    link = _link()
    clip = ClipFactory(project=link.project)
    records = [
        {"refrain_clip_id": clip.id, "annotation_id": 21, "annotator": "a@x", "genre": "oops"},
        {"refrain_clip_id": clip.id, "annotator": "a@x", "genre": [{"taxonomy": [["Jazz"]]}]},
        {"refrain_clip_id": 999999, "annotation_id": 22, "genre": [{"taxonomy": [["Jazz"]]}]},
        {"refrain_clip_id": clip.id, "annotation_id": 23, "genre": [{"taxonomy": [["Nope"]]}]},
        {
            "refrain_clip_id": clip.id,
            "annotation_id": 24,
            "annotator": 7,
            "genre": [{"taxonomy": [["Jazz"]]}],
        },
    ]
    summary = ls_import_export_file(link=link, text=json.dumps(records), fmt="json_min")
    assert summary.created == 1
    assert [e.split(":")[0] for e in summary.errors] == ["item 1", "item 2", "item 3", "item 4"]
    assert "annotation_id" in summary.errors[1] and "Nope" in summary.errors[3]
    assert Annotation.objects.get(clip=clip).source == "labelstudio:user-7"


def test_the_command_reads_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = _link()
    clips = [ClipFactory(project=link.project) for _ in range(3)]
    path = tmp_path / "project-5-export.json"
    path.write_text(json.dumps(_export([c.id for c in clips])))
    call_command("labelstudio", "import-file", str(link.id), str(path))
    out = json.loads(capsys.readouterr().out)
    assert (out["created"], out["errors"]) == (3, [])


def _ids_only(export: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export as Label Studio 1.23 really writes it: ``completed_by`` is the user id alone."""
    for task in export:
        for ann in task["annotations"]:
            ann["completed_by"] = ann["completed_by"]["id"]
    return export


def test_annotators_named_by_id_map_through_a_users_file_or_what_the_link_learnt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = _link()
    clips = [ClipFactory(project=link.project) for _ in range(3)]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_ids_only(_export([c.id for c in clips]))))
    users = tmp_path / "users.json"
    # Label Studio's GET /api/users/ answer, as an admin saves it.
    users.write_text(
        json.dumps(
            [
                {"id": 3, "email": "ann@ls.example", "username": "ann"},
                {"id": 4, "email": "other@ls.example", "username": "other"},
            ]
        )
    )
    call_command("labelstudio", "import-file", str(link.id), str(path), "--users", str(users))
    assert json.loads(capsys.readouterr().out)["created"] == 3
    assert {a.source for a in Annotation.objects.filter(clip__project=link.project)} == {
        "labelstudio:ann@ls.example",
        "labelstudio:other@ls.example",
    }
    # The link keeps who is who: the next export file needs no users file.
    second = _link(6)
    second.users.create(ls_user_id=3, email="ann@ls.example")
    other_clips = [ClipFactory(project=second.project) for _ in range(3)]
    text = json.dumps(_ids_only(_export([c.id for c in other_clips])))
    assert ls_import_export_file(link=second, text=text).created == 3
    assert {a.source for a in Annotation.objects.filter(clip__project=second.project)} == {
        "labelstudio:ann@ls.example",
        "labelstudio:user-4",  # nobody said who 4 is
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('[{"id": 3}]', "entry 0 has no 'id' and 'email'"),
        ('{"x": "a@b"}', "'x' is not a user id"),
        ('{"3": "nobody"}', "user 3 has no email"),
        ('"users"', "expected a list of users"),
    ],
)
def test_a_bad_users_file_is_refused_before_anything_is_stored(
    tmp_path: Path, content: str, message: str
) -> None:
    from django.core.management.base import CommandError

    link = _link()
    clips = [ClipFactory(project=link.project) for _ in range(3)]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_ids_only(_export([c.id for c in clips]))))
    users = tmp_path / "users.json"
    users.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("labelstudio", "import-file", str(link.id), str(path), "--users", str(users))
    assert Annotation.objects.filter(clip__project=link.project).count() == 0
