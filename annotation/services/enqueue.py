"""The one task producer: every task in the queue is created by :func:`task_enqueue`.

A producer says *why* a clip should be heard (a typed :data:`TaskSource`); the source decides the
task's kind, its overlap, its place in the queue and its idempotency key, so re-running a producer
(a resumed cycle, a retried import, a repeated send-back click) never creates a task twice.

Priority bands (higher is served first; annotators see label and relabel tasks, reviewers see
review tasks in their own queue):

==================  ==============  =====================================================
source              kind            priority
==================  ==============  =====================================================
``Manual``          label (or any)  as given; imports use 0.0
``Acquired``        label/relabel   (0, 1]: ``1 - rank / batch``, best pick first
``LabelIssueFound`` relabel         [1, 2]: ``1 + (1 - score)``, most suspect first
``ConsensusTie``    review          2.0
``Disagreement``    review          the disagreeing task's own priority
``SentBack``        relabel         the top open priority + 1 (someone is waiting on it)
``Requested``       relabel         2.0, the top of the label-issue band (an admin or
                                    reviewer asked for a second opinion in the explorer)
==================  ==============  =====================================================

Dedupe keys (unique per project; their formats are stored in old rows, so they never change):
``<kind>:<reason>:<clip>`` (manual and imports), ``al:label:<clip>``, ``al:relabel:<clip>:<n>``
(n = the clip's annotation count), ``issue:<issue>``, ``issue-review:<issue>``,
``review:disagreement:<task>``, ``relabel:send_back:<clip>:<n>`` (n = earlier review decisions),
``relabel:requested:<clip>:<n>`` (n = the clip's annotation count: asking again before anyone
answered finds the same task, asking after an answer queues a new one).

Blind mode: annotators never see ``reason_detail`` (and in blind projects see a relabel's reason only
as ``second_opinion``); still, the machine sources record ids and scores there, never the labels given
or suggested, since admin pages and exports show it. A send-back records the reviewer's own note.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max

from annotation.models import Project, Task

#: Band edges, named where producers need them (tests pin the order of the bands).
ACQUISITION_TOP = 1.0
LABEL_ISSUE_BASE = 1.0
TIE_PRIORITY = 2.0
REQUESTED_PRIORITY = LABEL_ISSUE_BASE + 1.0


@dataclass(frozen=True)
class Manual:
    """An admin or an import queues clips: ``<kind>:<reason>:<clip>``."""

    clip_id: int
    kind: str = Task.Kind.LABEL
    reason: str = "import"
    priority: float = 0.0
    overlap: int | None = None  # None: the project's overlap for labels, 1 otherwise

    def key(self) -> str:
        return f"{self.kind}:{self.reason}:{self.clip_id}"[:200]

    @classmethod
    def for_clips(cls, clip_ids: Iterable[int], **fields: Any) -> list[Manual]:
        """One source per clip, with the same kind, reason, priority and overlap."""
        return [cls(clip_id=int(c), **fields) for c in clip_ids]


@dataclass(frozen=True)
class Acquired:
    """An acquisition strategy picked the clip: rank ``rank`` (0 = best) of a batch of ``batch``."""

    clip_id: int
    strategy: str
    rank: int
    batch: int
    relabel: bool = False
    n_annotations: int = 0  # for a relabel: the clip's annotation count when picked
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def priority(self) -> float:
        return ACQUISITION_TOP - self.rank / max(self.batch, 1)

    def key(self) -> str:
        if self.relabel:
            return f"al:relabel:{self.clip_id}:{self.n_annotations}"
        return f"al:label:{self.clip_id}"


@dataclass(frozen=True)
class LabelIssueFound:
    """Detection flagged the clip's label (``score`` in [0, 1], low = suspect): a blind relabel."""

    clip_id: int
    issue_id: int
    run_id: int
    issue_type: str
    score: float

    @property
    def priority(self) -> float:
        return LABEL_ISSUE_BASE + (1.0 - min(max(self.score, 0.0), 1.0))

    def key(self) -> str:
        return f"issue:{self.issue_id}"


@dataclass(frozen=True)
class ConsensusTie:
    """A relabel left an even split on the routed issue: a reviewer decides."""

    clip_id: int
    issue_id: int
    issue_type: str
    disputed_node_ids: list[int]

    def key(self) -> str:
        return f"issue-review:{self.issue_id}"


@dataclass(frozen=True)
class Disagreement:
    """The annotators of a multi-annotator task gave different label sets: a reviewer looks."""

    clip_id: int
    task_id: int
    task_priority: float
    n_label_sets: int

    def key(self) -> str:
        return f"review:disagreement:{self.task_id}"


@dataclass(frozen=True)
class SentBack:
    """A reviewer sent the clip back: a relabel at the front of the queue."""

    clip_id: int
    reviewer: str
    note: str
    n_decisions_before: int

    def key(self) -> str:
        return f"relabel:send_back:{self.clip_id}:{self.n_decisions_before}"


@dataclass(frozen=True)
class Requested:
    """A reviewer or admin asked for a blind second opinion on the clip (the clip explorer)."""

    clip_id: int
    requested_by: str
    n_annotations: int

    def key(self) -> str:
        return f"relabel:requested:{self.clip_id}:{self.n_annotations}"


TaskSource = (
    Manual | Acquired | LabelIssueFound | ConsensusTie | Disagreement | SentBack | Requested
)


@dataclass(frozen=True)
class Enqueued:
    """What :func:`task_enqueue` did: task id by dedupe key (new and existing), and the new keys."""

    task_ids: dict[str, int]
    created: frozenset[str]

    def task_id(self, source: TaskSource) -> int:
        return self.task_ids[source.key()]


def _row(project: Project, source: TaskSource) -> Task:
    """The task a source asks for (not saved; a send-back's priority is set by the caller)."""
    kind: str
    overlap = 1
    detail: dict[str, Any]
    match source:
        case Manual():
            kind, priority, reason, detail = source.kind, source.priority, source.reason, {}
            overlap = source.overlap or (project.overlap if kind == Task.Kind.LABEL else 1)
        case Acquired():
            kind = Task.Kind.RELABEL if source.relabel else Task.Kind.LABEL
            priority, reason = source.priority, f"active_learning:{source.strategy}"
            detail = {"rank": source.rank + 1, **source.detail}
            if not source.relabel:
                overlap = project.overlap
        case LabelIssueFound():
            kind, priority = Task.Kind.RELABEL, source.priority
            reason = f"label_issue:{source.issue_type}"
            detail = {
                "issue": source.issue_id,
                "run": source.run_id,
                "score": round(source.score, 6),
            }
        case ConsensusTie():
            kind, priority = Task.Kind.REVIEW, TIE_PRIORITY
            reason = f"label_issue_tie:{source.issue_type}"
            detail = {"issue": source.issue_id, "disputed_nodes": source.disputed_node_ids}
        case Disagreement():
            kind, priority, reason = Task.Kind.REVIEW, source.task_priority, "disagreement"
            detail = {"task": source.task_id, "n_label_sets": source.n_label_sets}
        case SentBack():
            kind, priority, reason = Task.Kind.RELABEL, 0.0, "review:send_back"
            detail = {"reviewer": source.reviewer, "note": source.note[:200]}
        case Requested():
            kind, priority, reason = Task.Kind.RELABEL, REQUESTED_PRIORITY, "requested"
            detail = {"requested_by": source.requested_by}
    return Task(
        project=project,
        clip_id=source.clip_id,
        kind=kind,
        priority=priority,
        reason=reason[:120],
        reason_detail=detail,
        overlap=overlap,
        dedupe_key=source.key(),
    )


def task_enqueue(*, project: Project, sources: Sequence[TaskSource]) -> Enqueued:
    """Queue a task for each source that has none yet (by its dedupe key). Idempotent.

    Returns every source's task id, created now or before. Three queries at most (four with a
    send-back); callers that need the rows atomic with their own writes call it in their
    transaction. A concurrent producer that wins a key between the read and the insert is absorbed
    by the ``task_dedupe_unique`` constraint.
    """
    if not sources:
        return Enqueued({}, frozenset())
    by_key = {s.key(): s for s in sources}
    existing = dict(
        Task.objects.filter(project=project, dedupe_key__in=list(by_key)).values_list(
            "dedupe_key", "pk"
        )
    )
    missing = [s for k, s in by_key.items() if k not in existing]
    rows = [_row(project, s) for s in missing]
    if any(isinstance(s, SentBack) for s in missing):
        # Ahead of every open task, those queued in this same call included.
        top = Task.objects.filter(project=project, status=Task.Status.OPEN).aggregate(
            p=Max("priority")
        )["p"]
        batch_top = max((r.priority for r in rows), default=0.0)
        front = max(top or 0.0, batch_top, 0.0) + 1.0
        for row, source in zip(rows, missing, strict=True):
            if isinstance(source, SentBack):
                row.priority = front
    Task.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
    created = frozenset(r.dedupe_key for r in rows if r.dedupe_key is not None)
    if rows:
        # ignore_conflicts leaves pks unset: read them back (a lost race reads the winner's row).
        existing.update(
            Task.objects.filter(project=project, dedupe_key__in=list(created)).values_list(
                "dedupe_key", "pk"
            )
        )
    return Enqueued(existing, created)
