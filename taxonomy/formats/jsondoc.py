"""A JSON reader whose objects know the line they start on, for error messages."""

from __future__ import annotations

import json
import re
from typing import Any

from taxonomy.formats.base import TaxonomyFormatError


class LineDict(dict[str, Any]):
    line: int | None = None


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled loop: linear time
_JSON_BRACE = re.compile(r"[{}]")


class JsonDoc:
    """A parsed JSON document whose objects (``LineDict``) know the line they start on.

    The C parser calls ``object_pairs_hook`` as each object closes; the k-th call therefore belongs
    to the k-th ``}`` of the text outside strings, whose ``{`` a brace-matching scan finds. JSON
    strings cannot hold a raw newline, so blanking them first keeps every line where it was.
    """

    def __init__(self, text: str) -> None:
        closed: list[LineDict] = []
        duplicates: dict[int, str] = {}

        def hook(pairs: list[tuple[str, Any]]) -> LineDict:
            d = LineDict(pairs)
            if len(d) != len(pairs):
                seen: set[str] = set()
                for k, _ in pairs:
                    if k in seen:
                        duplicates.setdefault(len(closed), k)
                    seen.add(k)
            closed.append(d)
            return d

        try:
            self.value: Any = json.loads(text, object_pairs_hook=hook)
        except json.JSONDecodeError as e:
            raise TaxonomyFormatError(
                f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno
            ) from None
        except RecursionError:
            raise TaxonomyFormatError("invalid JSON: nested too deeply") from None
        except ValueError as e:  # e.g. an integer with too many digits
            raise TaxonomyFormatError(f"invalid JSON: {e}") from None
        self._text = text

        bare = _JSON_STRING.sub('""', text)
        line, position = 1, 0
        open_lines: list[int] = []
        object_lines: list[int] = []
        for m in _JSON_BRACE.finditer(bare):
            start = m.start()
            line += bare.count("\n", position, start)
            position = start
            if bare[start] == "{":
                open_lines.append(line)
            else:
                object_lines.append(open_lines.pop())
        for d, object_line in zip(closed, object_lines, strict=True):
            d.line = object_line
        for i, k in duplicates.items():
            raise TaxonomyFormatError(
                f"invalid JSON: duplicate field {k!r} in one object", line=closed[i].line
            )

    def string_lines(self) -> list[int]:
        """Line of every string (object keys included) in document order."""
        text = self._text
        lines: list[int] = []
        line, position = 1, 0
        for m in _JSON_STRING.finditer(text):
            start = m.start()
            line += text.count("\n", position, start)
            position = start
            lines.append(line)
        return lines


def line_of(value: Any) -> int | None:
    return value.line if isinstance(value, LineDict) else None
