"""The clip explorer's URL: its parameters parsed into an :class:`ExplorerQuery`, and back.

Every piece of the explorer's state (filters, sort, page) lives in the query string, so a URL can be
shared. Anything the explorer does not understand is refused with a message that names it
(``Invalid``, a 400), never ignored: a misspelt filter that showed every clip would mislead.

==================  ===========================================================================
parameter           meaning
==================  ===========================================================================
``node``            taxonomy node key (or full path): clips whose label that stands has it or a
                    descendant
``status``          ``ready``, ``failed``, ``labelled``, ``unlabelled``
``issue_type``      newest issue's type (``wrong_sibling``...), or ``none`` for clips without one
``issue_status``    newest issue's status (``open``, ``routed``...), or ``none``
``annotator``       a username: clips that person annotated
``quality``         consensus quality range ``lo-hi`` in [0, 1] (``0.2-0.6``, ``-0.5``, ``0.8-``)
``disagreement``    ``1``: several annotators, not all agreeing with the consensus; ``0``: the rest
``q``               text in the clip's name, external id or metadata (case-insensitive)
``sort``            a column, ``-`` first for descending (``-quality``); default ``id``
``page``            1-based page number
==================  ===========================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from django.http import QueryDict

from quality.models import LabelIssue
from refrain.errors import Invalid

#: Sort name in the URL -> ClipSummary column.
SORTS: dict[str, str] = {
    "id": "clip",
    "name": "name",
    "label": "label",
    "annotators": "n_annotators",
    "agreement": "agreement",
    "quality": "quality",
    "issue": "issue_status",
    "prediction": "prediction",
    "probability": "prediction_prob",
    "duration": "duration_s",
    "status": "clip_status",
}
STATUSES = ("ready", "failed", "labelled", "unlabelled")
NONE = "none"
PARAMS = (
    "node",
    "status",
    "issue_type",
    "issue_status",
    "annotator",
    "quality",
    "disagreement",
    "q",
    "sort",
    "page",
)
#: Longest page number accepted (beyond it a number is surely a typo, not a page).
MAX_PAGE = 1_000_000
_RANGE = re.compile(r"^\s*(?P<lo>\d*\.?\d*)\s*-\s*(?P<hi>\d*\.?\d*)\s*$")


@dataclass(frozen=True)
class ExplorerQuery:
    """The explorer's state, as parsed from (and written back to) its URL."""

    node: str = ""
    status: str = ""
    issue_type: str = ""
    issue_status: str = ""
    annotator: str = ""
    quality: tuple[float | None, float | None] | None = None
    disagreement: bool | None = None
    q: str = ""
    sort: str = "id"
    page: int = 1

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    def params(self, **changes: object) -> dict[str, str]:
        """The non-default parameters (after ``changes``), in :data:`PARAMS` order."""
        query = replace(self, **changes)  # type: ignore[arg-type]
        out: dict[str, str] = {}
        for name in PARAMS:
            value = getattr(query, name)
            if name == "quality":
                text = (
                    "" if value is None else "-".join("" if v is None else _num(v) for v in value)
                )
            elif name == "disagreement":
                text = "" if value is None else ("1" if value else "0")
            elif name == "sort":
                text = "" if value == "id" else str(value)
            elif name == "page":
                text = "" if value == 1 else str(value)
            else:
                text = str(value)
            if text:
                out[name] = text
        return out

    def urlencode(self, **changes: object) -> str:
        return urlencode(self.params(**changes))

    @property
    def filtered(self) -> bool:
        return bool(set(self.params()) - {"sort", "page"})


def _num(x: float) -> str:
    return f"{x:g}"


def _range(raw: str) -> tuple[float | None, float | None]:
    m = _RANGE.match(raw)
    if m is None or (not m["lo"] and not m["hi"]) or m["lo"] == "." or m["hi"] == ".":
        raise Invalid(
            f"quality={raw!r} is not a range: write lo-hi with numbers in [0, 1], e.g. 0.2-0.6"
        )
    lo = float(m["lo"]) if m["lo"] else None
    hi = float(m["hi"]) if m["hi"] else None
    for v in (lo, hi):
        if v is not None and not 0.0 <= v <= 1.0:
            raise Invalid(f"quality={raw!r}: the bounds must lie in [0, 1]")
    if lo is not None and hi is not None and lo > hi:
        raise Invalid(f"quality={raw!r}: the lower bound is above the upper one")
    return lo, hi


def _choice(name: str, raw: str, allowed: tuple[str, ...] | list[str]) -> str:
    if raw not in allowed:
        raise Invalid(f"{name}={raw!r} is not one of: {', '.join(allowed)}")
    return raw


def explorer_query_parse(params: QueryDict) -> ExplorerQuery:
    """Parse the explorer's query string; raise ``Invalid`` naming the first bad parameter."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise Invalid(
            f"unknown filter {', '.join(unknown)}; the explorer understands {', '.join(PARAMS)}"
        )
    for name in params:
        if len(params.getlist(name)) > 1:
            raise Invalid(f"{name} is given more than once")
    get = {k: params.get(k, "").strip() for k in PARAMS}
    sort = get["sort"] or "id"
    if sort.lstrip("-") not in SORTS or sort.startswith("--"):
        raise Invalid(f"sort={sort!r}: sort by one of {', '.join(SORTS)} (a leading - descends)")
    page = 1
    if get["page"]:
        if not get["page"].isdigit() or not 1 <= int(get["page"]) <= MAX_PAGE:
            raise Invalid(f"page={get['page']!r} is not a page number (1, 2, ...)")
        page = int(get["page"])
    disagreement: bool | None = None
    if get["disagreement"]:
        disagreement = _choice("disagreement", get["disagreement"], ("1", "0")) == "1"
    return ExplorerQuery(
        node=get["node"][:2000],
        status=_choice("status", get["status"], STATUSES) if get["status"] else "",
        issue_type=(
            _choice("issue_type", get["issue_type"], [*LabelIssue.Type.values, NONE])
            if get["issue_type"]
            else ""
        ),
        issue_status=(
            _choice("issue_status", get["issue_status"], [*LabelIssue.Status.values, NONE])
            if get["issue_status"]
            else ""
        ),
        annotator=get["annotator"][:150],
        quality=_range(get["quality"]) if get["quality"] else None,
        disagreement=disagreement,
        q=get["q"][:200],
        sort=sort,
        page=page,
    )
