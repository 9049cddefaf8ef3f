"""Label quality rows: relabel cycles, detection runs, label issues, consensus, annotator quality.

Rows record what happened and when; labels themselves only change through new
:class:`~annotation.models.Annotation` rows. An issue's lifecycle is a status plus a timestamp per
step (``routed_at``, ``review_requested_at``, ``closed_at``) and the rows that moved it there (the
relabel task, the review task, the annotation that answered, the reviewer who adjudicated).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from active_learning.models import ModelVersion
from annotation.models import Annotation, Clip, Project, Task, TaxonomyNode
from refrain.jobs import HeldJob


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


ACTIVE_STATUSES: tuple[str, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)


class QualityCycle(HeldJob):
    """One turn of the relabel loop: retrain -> detect -> route -> acquire, checkpointed per step.

    ``steps_done`` lists the steps whose results are committed; a worker that resumes a cycle
    (after a crash) skips them. ``results`` holds each step's summary, the audit of what it did.
    ``worker`` is set while a worker is inside a step and cleared at each checkpoint: a running
    cycle with no worker is between steps (its next step's message is queued).
    """

    class Trigger(models.TextChoices):
        MANUAL = "manual", "On demand"
        SCHEDULE = "schedule", "Schedule"
        ANNOTATIONS = "annotations", "After new annotations"

    STEPS: tuple[str, ...] = ("retrain", "detect", "route", "acquire")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quality_cycles")
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    steps_done = models.JSONField(default=list, blank=True)
    results = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Annotations of the project when the cycle was queued: the "after N new annotations" trigger
    # counts from here.
    n_annotations_at_start = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker started or resumed this cycle."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-created_at"]
        constraints = [
            # One live cycle per project: a second trigger while one runs joins it instead.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="quality_cycle_one_active",
            ),
        ]
        indexes = [models.Index(fields=["project", "status"], name="quality_cycle_status_idx")]

    def __str__(self) -> str:
        return f"cycle {self.pk} of {self.project} ({self.status})"


class QualityRun(HeldJob):
    """One detection pass over a project's labels: the structural check, then the model's."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quality_runs")
    cycle = models.OneToOneField(
        QualityCycle, null=True, blank=True, on_delete=models.SET_NULL, related_name="quality_run"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most issues the model-based detection may return."
    )
    params = models.JSONField(default=dict, blank=True)
    n_clips = models.PositiveIntegerField(default=0, help_text="Labelled clips checked.")
    n_scored = models.PositiveIntegerField(default=0, help_text="Clips with out-of-sample probs.")
    n_issues = models.PositiveIntegerField(default=0)
    n_structural = models.PositiveIntegerField(default=0)
    n_wrong_sibling = models.PositiveIntegerField(default=0)
    n_wrong_branch = models.PositiveIntegerField(default=0)
    n_missing_genre = models.PositiveIntegerField(default=0)
    n_extra_genre = models.PositiveIntegerField(default=0)
    n_already_open = models.PositiveIntegerField(
        default=0, help_text="Flagged clips skipped because an earlier issue is still routed."
    )
    n_superseded = models.PositiveIntegerField(default=0)
    n_routed = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-created_at"]
        indexes = [models.Index(fields=["project", "status"], name="quality_run_status_idx")]

    def __str__(self) -> str:
        return f"quality run {self.pk} of {self.project} ({self.status})"


class LabelIssue(models.Model):
    """A clip whose current labels a run judged probably wrong, and what became of it."""

    class Type(models.TextChoices):
        WRONG_SIBLING = "wrong_sibling", "Wrong sibling"
        WRONG_BRANCH = "wrong_branch", "Wrong branch"
        MISSING_GENRE = "missing_genre", "Missing genre"
        EXTRA_GENRE = "extra_genre", "Extra genre"
        STRUCTURAL = "structural", "Structural"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ROUTED = "routed", "Routed for relabel"
        IN_REVIEW = "in_review", "Tie, with a reviewer"
        CONFIRMED = "confirmed", "Confirmed (label changed)"
        REJECTED = "rejected", "Rejected (original stands)"
        SUPERSEDED = "superseded", "Superseded by a later run"

    LIVE: tuple[str, ...] = (Status.OPEN, Status.ROUTED, Status.IN_REVIEW)

    run = models.ForeignKey(QualityRun, on_delete=models.CASCADE, related_name="issues")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_issues")
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="label_issues")
    annotation = models.ForeignKey(
        Annotation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="label_issues",
        help_text="The annotation judged (the clip's latest when the run read it).",
    )
    score = models.FloatField(help_text="Label quality, lower = more suspect.")
    rank = models.PositiveIntegerField(help_text="1 = most suspect in its run.")
    issue_type = models.CharField(max_length=20, choices=Type.choices)
    node = models.ForeignKey(
        TaxonomyNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    depth = models.PositiveSmallIntegerField(null=True, blank=True)
    suggested_node_ids = models.JSONField(default=list, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    relabel_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    review_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolving_annotation = models.ForeignKey(
        Annotation, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_node_ids = models.JSONField(default=list, blank=True)
    adjudicated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    routed_at = models.DateTimeField(null=True, blank=True)
    review_requested_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["run", "clip"], name="label_issue_run_clip_unique"),
            # A re-run never duplicates a clip's live issue.
            models.UniqueConstraint(
                fields=["clip"],
                condition=Q(status__in=("open", "routed", "in_review")),
                name="label_issue_one_live_per_clip",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status", "issue_type"], name="label_issue_filter_idx"),
            models.Index(fields=["relabel_task"], name="label_issue_relabel_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.issue_type} on {self.clip_id} ({self.status})"


class ClipConsensus(models.Model):
    """The current consensus of a clip's annotations (derived; recomputed, never a label)."""

    clip = models.OneToOneField(Clip, on_delete=models.CASCADE, related_name="consensus")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    node_ids = models.JSONField(default=list, blank=True)
    quality = models.FloatField(null=True, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    n_annotations = models.PositiveIntegerField(default=0)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_weight = models.FloatField(null=True, blank=True)
    scope = models.CharField(
        max_length=10, default="project", help_text="'project' (cycle) or 'clip' (new annotation)."
    )
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["project", "quality"], name="clip_consensus_quality_idx")]

    def __str__(self) -> str:
        return f"consensus of {self.clip_id}"


class AnnotatorQuality(models.Model):
    """CROWDLAB-style quality and weight of one annotator in one project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    quality = models.FloatField(null=True, blank=True)
    weight = models.FloatField(null=True, blank=True)
    n_annotations = models.PositiveIntegerField(default=0)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="annotator_quality_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.project_id}: {self.quality}"


class DashboardSnapshot(models.Model):
    """One console page's precomputed aggregates for a project (``quality.dashboards``).

    The aggregates that cannot be read per request at 100k clips (the label distribution over the
    tree, pairwise agreement, daily series, the confusion per level) are computed by a worker
    (``quality.tasks.refresh_dashboards``: after each relabel cycle, and when a page finds its
    snapshot older than ``REFRAIN_DASHBOARD_MAX_AGE_SECONDS``); the page reads this one row and
    says when it was computed.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    page = models.CharField(max_length=20)
    payload = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(default=timezone.now)
    seconds = models.FloatField(default=0.0, help_text="How long computing it took.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "page"], name="dashboard_snapshot_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.page} snapshot of {self.project_id} ({self.computed_at:%Y-%m-%d %H:%M})"


class ClipSummary(models.Model):
    """One row per clip with what the clip explorer filters and sorts on (derived, never a label).

    A denormalised copy kept by :mod:`quality.services.summary`: the label that stands (as
    :func:`annotation.selectors.current_labels` decides it), who annotated, the consensus, the newest
    label issue, the newest model's prediction and the clip's own fields. The explorer reads only
    this table, so any filter plus any sort is one indexed scan of one table at 100k clips.

    ``label_node_ids`` and ``annotator_ids`` are space-delimited id lists (``" 3 17 42 "``): the
    label set is ancestor-closed, so "the node or any descendant" is ``LIKE '% <id> %'`` on a short
    string, on PostgreSQL and SQLite alike.
    """

    clip = models.OneToOneField(
        Clip, on_delete=models.CASCADE, primary_key=True, related_name="summary"
    )
    # Not indexed alone: every index of this table starts with the project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The clip's own fields.
    name = models.CharField(max_length=255, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    clip_status = models.CharField(max_length=10, default="ready")
    search = models.TextField(blank=True, help_text="Lower-cased name, external id and metadata.")
    # The label that stands.
    label_annotation_id = models.BigIntegerField(null=True, blank=True)
    label = models.CharField(
        max_length=2000, blank=True, help_text="Most specific paths of the label, '|'-joined."
    )
    label_node_ids = models.TextField(default=" ", blank=True)
    # Who labelled it.
    n_annotations = models.PositiveIntegerField(default=0)
    n_annotators = models.PositiveIntegerField(default=0)
    annotators = models.CharField(max_length=1000, blank=True)
    annotator_ids = models.TextField(default=" ", blank=True)
    # Consensus (``ClipConsensus``).
    quality = models.FloatField(null=True, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    # The newest label issue.
    issue_id = models.BigIntegerField(null=True, blank=True)
    issue_type = models.CharField(max_length=20, blank=True)
    issue_status = models.CharField(max_length=12, blank=True)
    # The newest finished model's most probable path (its deepest node) and that node's probability.
    model_number = models.PositiveIntegerField(null=True, blank=True)
    prediction = models.CharField(max_length=2000, blank=True)
    prediction_prob = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    #: Sortable columns that may be NULL. Their NULLs sort last both ways: ascending, this index
    #: serves (PostgreSQL's default order); descending, a second one in ``DESC NULLS LAST`` order,
    #: which migration 0005 adds on PostgreSQL only (SQLite cannot index that order).
    NULLABLE_SORTS: tuple[str, ...] = ("duration_s", "quality", "agreement", "prediction_prob")
    #: Sortable columns that are never NULL: one index each, read backwards for descending sorts.
    PLAIN_SORTS: tuple[str, ...] = (
        "name",
        "clip_status",
        "label",
        "n_annotators",
        "issue_status",
        "prediction",
    )

    class Meta:
        indexes = [
            models.Index(fields=["project", "clip"], name="clip_summary_id_idx"),
            *[
                models.Index(fields=["project", f, "clip"], name=f"clip_sum_{f}_idx")
                for f in (
                    "name",
                    "clip_status",
                    "label",
                    "n_annotators",
                    "issue_status",
                    "prediction",
                    "duration_s",
                    "quality",
                    "agreement",
                    "prediction_prob",
                )
            ],
        ]

    def __str__(self) -> str:
        return f"summary of clip {self.clip_id}"
