"""Label Studio export files, read offline: JSON (whole tasks), JSON_MIN and CSV.

Each yields ``(task, annotation)`` pairs in the shape Label Studio's API gives them, so one ingest
(:func:`annotation.integrations.labelstudio.services.ls_annotation_ingest`) stores them, with the
same idempotency keys as a pull or the webhook: importing a file twice, or a file whose annotations
a pull already brought, stores nothing twice.

- **JSON**: a list of tasks (or one task), each with ``data`` and ``annotations`` (``completions`` in
  old exports); cancelled annotations are skipped by the ingest.
- **JSON_MIN**: one record per annotation: the task's data fields (``refrain_clip_id``), the
  control's value under its name (``genre``: ``[{"taxonomy": [[...], ...]}]``), ``annotator``,
  ``annotation_id`` and ``lead_time``. Label Studio leaves out cancelled annotations.
- **CSV**: the same columns, the control's value as a JSON string.

A record Refrain cannot read is reported with its position (``item 3``, ``row 7``) and the rest go on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from annotation.integrations.labelstudio.convert import (
    CONTROL_NAME,
    RESULT_TYPE,
    LabelStudioFormatError,
)

FORMATS = ("json", "json_min", "csv")


@dataclass(frozen=True)
class ExportRecord:
    """One annotation of the file, or why record ``where`` could not be read."""

    where: str
    task: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    error: str = ""


def export_format_sniff(text: str, filename: str = "") -> str:
    """``json``, ``json_min`` or ``csv``, from the name and the first record."""
    name = filename.lower()
    stripped = text.lstrip()
    if name.endswith(".csv") or not stripped.startswith(("[", "{")):
        return "csv"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelStudioFormatError(f"not JSON (line {exc.lineno}): {exc.msg}") from exc
    first = doc[0] if isinstance(doc, list) and doc else doc
    if isinstance(first, dict) and ("annotations" in first or "completions" in first):
        return "json"
    return "json_min"


def export_records(text: str, fmt: str) -> Iterator[ExportRecord]:
    """The annotations of an export file's ``text`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        yield from _from_json(text)
    elif fmt == "json_min":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelStudioFormatError(f"not JSON (line {exc.lineno}): {exc.msg}") from exc
        if not isinstance(doc, list):
            raise LabelStudioFormatError("a JSON_MIN export is a list of records")
        for i, rec in enumerate(doc, start=1):
            yield _from_flat(f"item {i}", rec, json_value=False)
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or CONTROL_NAME not in reader.fieldnames:
            raise LabelStudioFormatError(
                f"the CSV has no {CONTROL_NAME!r} column (columns: {reader.fieldnames})"
            )
        for i, row in enumerate(reader, start=2):  # row 1 is the header
            yield _from_flat(f"row {i}", row, json_value=True)
    else:
        raise LabelStudioFormatError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")


def _from_json(text: str) -> Iterator[ExportRecord]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelStudioFormatError(f"not JSON (line {exc.lineno}): {exc.msg}") from exc
    tasks = doc if isinstance(doc, list) else [doc]
    for i, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            yield ExportRecord(f"task {i}", error="not a task with a 'data' object")
            continue
        stub = {"id": task.get("id"), "data": task["data"]}
        for annotation in task.get("annotations") or task.get("completions") or []:
            if isinstance(annotation, dict):
                yield ExportRecord(f"task {i}", stub, annotation)
            else:
                yield ExportRecord(f"task {i}", error="an annotation is not an object")


def _from_flat(where: str, rec: Any, *, json_value: bool) -> ExportRecord:
    if not isinstance(rec, dict):
        return ExportRecord(where, error="not an object")
    value = rec.get(CONTROL_NAME)
    if json_value and isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            value = [{RESULT_TYPE: [[value]]}]  # a single choice exported as its bare name
    items = value if isinstance(value, list) else [value]
    paths: list[Any] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(RESULT_TYPE), list):
            paths.extend(item[RESULT_TYPE])
        elif item not in (None, ""):
            return ExportRecord(where, error=f"{CONTROL_NAME!r} is not a taxonomy value: {item!r}")
    ann_id = _int(rec.get("annotation_id"))
    if ann_id is None:
        return ExportRecord(where, error="no integer 'annotation_id'")
    annotator = rec.get("annotator")
    annotation: dict[str, Any] = {
        "id": ann_id,
        "result": [{"from_name": CONTROL_NAME, "type": RESULT_TYPE, "value": {RESULT_TYPE: paths}}],
        "completed_by": _int(annotator) if _int(annotator) is not None else {"email": annotator},
    }
    lead_time = _float(rec.get("lead_time"))
    if lead_time is not None:
        annotation["lead_time"] = lead_time
    task = {"id": _int(rec.get("id")), "data": {"refrain_clip_id": rec.get("refrain_clip_id")}}
    return ExportRecord(where, task, annotation)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value) if value.strip() else None
        except ValueError:
            return None
        return int(number) if number is not None and number.is_integer() else None
    return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
