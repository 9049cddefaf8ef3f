"""Reading a taxonomy file's text: decoding, and the CSV records the CSV formats share."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

from taxonomy.formats.base import MAX_INPUT_CHARS, TaxonomyFormatError

_INT = re.compile(r"[+-]?\d+")


def decode(data: str | bytes) -> str:
    if len(data) > MAX_INPUT_CHARS:
        raise TaxonomyFormatError(f"file is larger than {MAX_INPUT_CHARS} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise TaxonomyFormatError(
                f"not UTF-8 text (byte {data[e.start]:#04x})", line=line
            ) from None
    else:
        text = data.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line, fields)`` for each non-blank CSV record."""
    reader = csv.reader(io.StringIO(text), strict=True)
    done = 0
    try:
        for row in reader:
            start, done = done + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield start, row
    except csv.Error as e:
        raise TaxonomyFormatError(f"malformed CSV: {e}", line=reader.line_num) from None


def csv_header(line: int, row: list[str]) -> list[str]:
    columns = [c.strip().lower() for c in row]
    for i, c in enumerate(columns):
        if c in columns[:i]:
            raise TaxonomyFormatError(f"duplicate column {c!r} in the header", line=line)
    return columns


def check_width(line: int, row: list[str], columns: list[str]) -> None:
    if len(row) != len(columns):
        raise TaxonomyFormatError(
            f"expected {len(columns)} columns ({','.join(columns)}), got {len(row)}", line=line
        )


def parse_int(value: str, what: str, *, line: int, node: str | None = None) -> int:
    value = value.strip()
    if not _INT.fullmatch(value):
        raise TaxonomyFormatError(f"{what} {value!r} is not an integer", line=line, node=node)
    return int(value)
