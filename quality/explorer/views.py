"""The clip explorer's pages: the filtered, sorted, paginated table, and its bulk actions.

Reviewers and admins of the project only (annotators are blind to labels, annotators and the
model's guess). Bad input (an unknown filter, a malformed range, a page past the end, clips of
another project) is raised as the application error it is and answered 4xx with its message by
the error middleware; nothing is written.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.models import Membership, Project
from annotation.selectors import taxonomy_index_cached
from annotation.views import project_role
from quality.explorer import services
from quality.explorer.filters import SORTS, STATUSES, ExplorerQuery, explorer_query_parse
from quality.explorer.selectors import explorer_page
from quality.export import FORMATS, labels_download
from quality.models import LabelIssue
from quality.services.summary import (
    clip_summaries_behind,
    clip_summaries_fill_missing,
    clip_summaries_missing,
)
from refrain.errors import Invalid
from refrain.jobs import delay_on_commit_or_log

Role = Membership.Role
#: Up to this many clips without a summary row (an import since the last refresh) are indexed while
#: the page loads; more are left to a worker and the page says so.
SYNC_FILL = 2_000
REFRESH_EVERY_S = 300
ACTIONS = ("relabel", "queue", "export")

#: Table columns: (sort key or "", heading).
HEADINGS = (
    ("id", "#"),
    ("name", "Clip"),
    ("label", "Label that stands"),
    ("annotators", "Annotators"),
    ("agreement", "Agreement"),
    ("quality", "Quality"),
    ("issue", "Newest issue"),
    ("prediction", "Model prediction"),
    ("probability", "P"),
    ("duration", "Duration"),
    ("status", "Status"),
)


def _summaries_ready(project: Project) -> int:
    """Index clips that have no summary row yet; returns how many are left to a worker."""
    if not clip_summaries_behind(project=project):
        return 0
    missing = clip_summaries_missing(project=project)
    if missing <= SYNC_FILL:
        clip_summaries_fill_missing(project=project)
        return 0
    # Sent here, not from a service: a page asks a worker to catch up, nothing else waits on it.
    # Once per few minutes per project, however many people open the page meanwhile.
    from quality.tasks import refresh_clip_summaries

    if cache.add(f"explorer-refresh:{project.pk}", 1, timeout=REFRESH_EVERY_S):
        delay_on_commit_or_log(refresh_clip_summaries, project.pk)
    return missing


@require_GET
@project_role(Role.REVIEWER)
def explore(request: HttpRequest, membership: Membership) -> HttpResponse:
    project = membership.project
    query = explorer_query_parse(request.GET)
    pending = _summaries_ready(project)
    page = explorer_page(project=project, query=query)
    types, statuses = dict(LabelIssue.Type.choices), dict(LabelIssue.Status.choices)
    for row in page.rows:
        row["labels"] = row["label"].split("|") if row["label"] else []
        row["issue_label"] = types.get(row["issue_type"], row["issue_type"])
        row["issue_status_label"] = statuses.get(row["issue_status"], row["issue_status"])
    index = taxonomy_index_cached(project.taxonomy_version)
    columns = []
    for key, heading in HEADINGS:
        sort = f"-{key}" if query.sort == key else key
        columns.append(
            {
                "key": key,
                "heading": heading,
                "url": "?" + query.urlencode(sort=sort, page=1),
                "active": query.sort_key == key,
                "descending": query.descending,
            }
        )
    annotators = list(
        Membership.objects.filter(project=project)
        .order_by("user__username")
        .values_list("user__username", flat=True)
    )
    context: dict[str, Any] = {
        "project": project,
        "membership": membership,
        "tab": "quality",
        "query": query,
        "f": query.params(),
        "page": page,
        "columns": columns,
        "nodes": index.nodes,
        "statuses": STATUSES,
        "issue_types": LabelIssue.Type.choices,
        "issue_statuses": LabelIssue.Status.choices,
        "annotators": annotators,
        "sorts": list(SORTS),
        "pending": pending,
        "querystring": query.urlencode(),
        "prev_url": "?" + query.urlencode(page=page.page - 1) if page.has_previous else "",
        "next_url": "?" + query.urlencode(page=page.page + 1) if page.has_next else "",
        "last_url": "?" + query.urlencode(page=page.n_pages)
        if page.has_next and not page.capped
        else "",
        "can_act": True,
        "export_formats": FORMATS,
    }
    return render(request, "quality/explorer.html", context)


def _ids(raw: list[str]) -> list[int]:
    try:
        return [int(x) for x in raw]
    except ValueError:
        raise Invalid("clip ids must be whole numbers") from None


@require_POST
@project_role(Role.REVIEWER)
def explore_action(request: HttpRequest, membership: Membership) -> HttpResponse:
    """A bulk action on the checked rows (``clip``) or on every clip matching the filter
    (``scope=all`` with the explorer's query string in ``filter``)."""
    project = membership.project
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        raise Invalid(f"action={action!r} is not one of: {', '.join(ACTIONS)}")
    filter_qs = request.POST.get("filter", "")
    query = explorer_query_parse(QueryDict(filter_qs))
    scope = request.POST.get("scope", "selected")
    if scope not in ("selected", "all"):
        raise Invalid(f"scope={scope!r} is not one of: selected, all")
    clip_ids = _ids(request.POST.getlist("clip")) if scope == "selected" else None
    selection = services.explorer_selection(project=project, clip_ids=clip_ids, query=query)
    if action == "export":
        fmt = request.POST.get("format", "csv")
        if fmt not in FORMATS:
            raise Invalid(f"format={fmt!r} is not one of: {', '.join(FORMATS)}")
        return labels_download(project, fmt, clip_ids=selection)  # type: ignore[arg-type]
    if action == "relabel":
        outcome = services.explorer_relabel(project=project, clip_ids=selection, user=request.user)
        messages.success(request, "Blind relabel: " + outcome.message("relabel task(s) queued"))
    else:
        outcome = services.explorer_queue(project=project, clip_ids=selection)
        messages.success(request, "Labelling: " + outcome.message("label task(s) queued"))
    back = query.params(page=1)
    url = reverse("quality-explore", kwargs={"slug": project.slug})
    return redirect(f"{url}?{urlencode(back)}" if back else url)


def explorer_url(slug: str, query: ExplorerQuery) -> str:
    """The explorer's URL for ``query`` (the taxonomy dashboard links nodes here)."""
    encoded = query.urlencode()
    url = reverse("quality-explore", kwargs={"slug": slug})
    return f"{url}?{encoded}" if encoded else url
