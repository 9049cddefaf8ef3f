"""Projects, taxonomies, clips, the work queue and annotations.

Rows hold facts; the rules that change them live in ``annotation/services``. Annotations are never
updated: a correction is a new row, so the history of every label is kept.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from refrain.jobs import HeldJob


class Taxonomy(models.Model):
    """A named genre tree. Its content lives in immutable, numbered versions."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "taxonomies"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> TaxonomyVersion | None:
        return self.versions.order_by("-number").first()


class TaxonomyVersion(models.Model):
    """One imported state of a taxonomy. Annotations point at the version they were made on."""

    taxonomy = models.ForeignKey(Taxonomy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    source_format = models.CharField(max_length=40)
    source_name = models.CharField(max_length=255, blank=True)
    content_sha256 = models.CharField(max_length=64)
    n_nodes = models.PositiveIntegerField(default=0)
    max_depth = models.PositiveSmallIntegerField(default=0)
    is_dag = models.BooleanField(default=False)
    # {"added": [...], "removed": [...], "renamed": [[key, old, new]], "moved": [[key, old, new]]}
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["taxonomy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["taxonomy", "number"], name="taxonomy_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.taxonomy.name} v{self.number}"


class TaxonomyNode(models.Model):
    """A node of one taxonomy version.

    ``index`` is the node's column in (N, K) arrays; ``parent`` is the primary parent (arrays use it);
    ``extra_parents`` holds the other parents of DAG sources such as AudioSet.
    """

    version = models.ForeignKey(TaxonomyVersion, on_delete=models.CASCADE, related_name="nodes")
    key = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=2000)
    depth = models.PositiveSmallIntegerField()
    index = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    extra_parents = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="+")
    is_leaf = models.BooleanField(default=True)
    extra = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["version", "index"]
        constraints = [
            models.UniqueConstraint(fields=["version", "key"], name="taxonomy_node_key_unique"),
            models.UniqueConstraint(fields=["version", "index"], name="taxonomy_node_index_unique"),
        ]
        indexes = [models.Index(fields=["version", "path"], name="taxonomy_node_path_idx")]

    def __str__(self) -> str:
        return self.path


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    taxonomy_version = models.ForeignKey(
        TaxonomyVersion, on_delete=models.PROTECT, related_name="projects"
    )
    # Labelling policy.
    overlap = models.PositiveSmallIntegerField(
        default=1, help_text="How many annotators label each clip."
    )
    blind = models.BooleanField(
        default=True, help_text="Annotators never see other people's labels or the model's guess."
    )
    lease_seconds = models.PositiveIntegerField(
        default=15 * 60,
        help_text="How long an annotator holds a task before it returns to the queue.",
    )
    # Audio.
    target_sample_rate = models.PositiveIntegerField(default=22050)

    class LongAudio(models.TextChoices):
        REJECT = "reject", "Reject files longer than REFRAIN_MAX_CLIP_SECONDS"
        SEGMENT = "segment", "Cut them into segments of segment_seconds"

    long_audio = models.CharField(
        max_length=10,
        choices=LongAudio.choices,
        default=LongAudio.REJECT,
        help_text="What an import does with audio longer than REFRAIN_MAX_CLIP_SECONDS.",
    )
    segment_seconds = models.FloatField(
        default=30.0, help_text="Segment length when long audio is cut into segments."
    )
    # The loop's policy (model, features, retrain trigger, budgets, acquisition) lives with the
    # loop, one layer up: ``active_learning.models.LoopPolicy``.
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive"),
            models.CheckConstraint(
                condition=Q(segment_seconds__gt=0), name="project_segment_seconds_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        REVIEWER = "reviewer", "Reviewer"
        ANNOTATOR = "annotator", "Annotator"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class Clip(models.Model):
    """An audio file (or a segment of one) in a project."""

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Storage(models.TextChoices):
        # A file read in place from an import root (REFRAIN_IMPORT_ROOTS, MEDIA_ROOT), as Label
        # Studio's local storage does; the key is its absolute path, valid on hosts that mount it.
        LOCAL = "local", "Local file"
        # A key in the media storage (STORAGES["default"]: MEDIA_ROOT or the media bucket): uploads.
        MEDIA = "media", "Media storage"
        # An object in an S3-compatible bucket, read in place; the key is "<bucket>/<object key>".
        S3 = "s3", "S3 bucket"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clips")
    external_id = models.CharField(max_length=255, blank=True)
    # Where the audio is: read only through annotation.services.audio_source.clip_audio_open.
    storage = models.CharField(max_length=10, choices=Storage.choices, default=Storage.LOCAL)
    storage_key = models.CharField(max_length=1100, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    # The key in the media storage (served/<ab>/<sha256>.<ext>) of the tag-free copy that everyone
    # but admins asking for the original is served (blind mode: no ID3/Vorbis/INFO tags, no original
    # name). Made at import; empty for rows older than copies, which get one on first use.
    served_key = models.CharField(max_length=300, blank=True)
    # Null when the file could not even be read (missing, permission denied). A segment of a long
    # file holds sha256("<file sha256>:<start>-<end>"), so each segment is unique and re-imports of
    # the file find every segment as a duplicate.
    sha256 = models.CharField(max_length=64, null=True, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    format = models.CharField(max_length=20, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    sample_rate = models.PositiveIntegerField(null=True, blank=True)
    channels = models.PositiveSmallIntegerField(null=True, blank=True)
    segment_start_s = models.FloatField(null=True, blank=True)
    segment_end_s = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    import_source = models.CharField(max_length=255, blank=True)
    # Where several people labelled the clip, the newest annotation whose label set equals their
    # consensus. Kept by the layer that decides consensus (quality); read only through
    # annotation.selectors.current_labels, which is the one answer to "which label stands".
    consensus_annotation = models.ForeignKey(
        "Annotation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="clip_content_unique"),
        ]
        indexes = [
            models.Index(fields=["project", "status"], name="clip_project_status_idx"),
            models.Index(fields=["project", "external_id"], name="clip_project_external_idx"),
            # A bucket import skips the objects it already holds without downloading them.
            models.Index(fields=["project", "storage_key"], name="clip_project_key_idx"),
        ]

    def __str__(self) -> str:
        return self.original_name or self.external_id or f"clip {self.pk}"

    @property
    def file_path(self) -> str:
        """Where the audio is, for people and manifests: a path, ``media:<key>`` or
        ``s3://<bucket>/<key>``."""
        if self.storage == self.Storage.S3:
            return f"s3://{self.storage_key}"
        if self.storage == self.Storage.MEDIA:
            return f"media:{self.storage_key}"
        return self.storage_key


class Task(models.Model):
    """One unit of work in the queue: a clip to label, relabel or review.

    ``overlap`` is how many distinct annotators must complete it; each one holds an
    :class:`Assignment` with a lease. A task is open until enough assignments are submitted.
    """

    class Kind(models.TextChoices):
        LABEL = "label", "Label"
        RELABEL = "relabel", "Relabel"
        REVIEW = "review", "Review"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LABEL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    priority = models.FloatField(default=0.0)
    # Who put it there and why: "import", "active_learning:uncertainty", "label_issue:wrong_sibling"...
    reason = models.CharField(max_length=120, default="import")
    reason_detail = models.JSONField(default=dict, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1)
    n_submitted = models.PositiveSmallIntegerField(default=0)
    # Idempotency for producers (a relabel cycle re-run must not create the task twice).
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "dedupe_key"],
                condition=Q(dedupe_key__isnull=False),
                name="task_dedupe_unique",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="task_overlap_positive"),
        ]
        indexes = [
            # The queue scan: open tasks of a project by priority.
            models.Index(fields=["project", "status", "-priority", "id"], name="task_queue_idx"),
            models.Index(fields=["clip", "kind"], name="task_clip_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.clip} ({self.status})"


class Assignment(models.Model):
    """An annotator's hold on a task, with a lease that expires."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    lease_expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Never the same task twice to one annotator.
            models.UniqueConstraint(fields=["task", "user"], name="assignment_task_user_unique"),
        ]
        indexes = [
            models.Index(fields=["user", "status"], name="assignment_user_status_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="assignment_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.task_id} ({self.status})"


class Annotation(models.Model):
    """An immutable label set for a clip, closed under ancestors.

    ``source`` says where it came from: ``user:<username>``, ``import:<file>``, ``review:<username>``.
    A correction is a new row pointing at the one it ``supersedes``.
    """

    class Kind(models.TextChoices):
        LABEL = "label", "Label"
        RELABEL = "relabel", "Relabel"
        REVIEW = "review", "Review decision"
        IMPORT = "import", "Import"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="annotations")
    taxonomy_version = models.ForeignKey(
        TaxonomyVersion, on_delete=models.PROTECT, related_name="annotations"
    )
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotation"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="annotations",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LABEL)
    source = models.CharField(max_length=300)
    nodes = models.ManyToManyField(TaxonomyNode, through="AnnotationLabel", related_name="+")
    unsure = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)
    supersedes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["clip", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="annotation_idempotency_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["clip", "created_at"], name="annotation_clip_time_idx"),
            models.Index(fields=["user", "created_at"], name="annotation_user_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.clip_id} by {self.source}"

    def save(self, *args: object, **kwargs: object) -> None:
        # Immutability is the audit guarantee: refuse updates of stored annotations.
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValidationError("Annotations are immutable; create a new one instead.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class AnnotationLabel(models.Model):
    """One node of an annotation's label set. ``explicit`` is False for implied ancestors."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="labels")
    node = models.ForeignKey(TaxonomyNode, on_delete=models.PROTECT, related_name="+")
    explicit = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotation", "node"], name="annotation_label_unique"),
        ]
        indexes = [models.Index(fields=["node"], name="annotation_label_node_idx")]

    def __str__(self) -> str:
        return f"{self.annotation_id}: {self.node_id}"


class ImportJob(HeldJob):
    """A record of one clip import: what was asked, and the summary of what happened.

    Held like the other jobs (``refrain.jobs``): the worker running it records itself and beats a
    heartbeat, so the orphan sweep resumes an import whose worker died. ``options`` is what the
    import task needs to read the source again (``folder`` + ``labels_from_folders``, or
    ``manifest``; empty for uploads, which are not resumable); ``items_done`` counts the source's
    items already accounted for, committed with each chunk's clips, so a resume skips exactly those.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    source = models.CharField(max_length=1000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    options = models.JSONField(default=dict, blank=True)
    items_done = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    n_imported = models.PositiveIntegerField(default=0)
    n_duplicate = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    n_labels = models.PositiveIntegerField(default=0)
    # [{"item": ..., "reason": ...}] for failed files and rejected labels, so nothing is lost silently.
    problems = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"import into {self.project} from {self.source}"


class ReviewDecision(models.Model):
    """A reviewer's verdict on a clip's annotations; one row per decision, never updated.

    ``accept`` points at the annotation judged right; ``correct`` at the new annotation the reviewer
    wrote (it ``supersedes`` the one it corrects); ``send_back`` at the relabel task it created.
    """

    class Decision(models.TextChoices):
        ACCEPT = "accept", "Accept"
        CORRECT = "correct", "Correct"
        SEND_BACK = "send_back", "Send back"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="review_decisions")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="review_decisions"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices)
    annotation = models.ForeignKey(
        Annotation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="review_decisions",
        help_text="The annotation accepted or corrected.",
    )
    correction = models.OneToOneField(
        Annotation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="correction_of",
        help_text="The reviewer's own label set (for 'correct').",
    )
    relabel_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["clip", "-created_at"]
        indexes = [models.Index(fields=["clip", "created_at"], name="review_clip_time_idx")]

    def __str__(self) -> str:
        return f"{self.decision} on {self.clip_id} by {self.reviewer_id}"


class TaxonomyImportJob(models.Model):
    """A large taxonomy import run on a worker, with its progress (nodes written of the total).

    The uploaded file waits in ``data`` until the worker takes it and is dropped when the job ends
    either way, so a rejected import leaves nothing behind but this record and its reason.
    """

    Status = ImportJob.Status  # the same four states as a clip import

    name = models.CharField(max_length=200)
    filename = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=40, blank=True)
    root = models.CharField(max_length=1024, blank=True)
    data = models.BinaryField(editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    n_nodes_total = models.PositiveIntegerField(default=0)
    n_nodes_written = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    summary = models.TextField(blank=True)
    version = models.ForeignKey(
        TaxonomyVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"taxonomy import {self.pk} of {self.name!r} ({self.status})"


def _default_token_scopes() -> list[str]:
    return ["api"]


class ApiToken(models.Model):
    """A personal API token. Only its SHA-256 is stored; the token is shown once at creation.

    ``password_fingerprint`` ties the token to the password its owner had when it was made: any
    password change (admin, ``changepassword``, ``set_password`` anywhere) makes it stop working.
    """

    class Scope(models.TextChoices):
        API = "api", "Use the API"
        TOKENS = "tokens", "Manage API tokens"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to tell tokens apart.")
    scopes = models.JSONField(default=_default_token_scopes)
    password_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class LabelStudioLink(models.Model):
    """A Refrain project mirrored into one Label Studio project.

    ``api_key`` is the Label Studio token Refrain acts with (stored as given: Refrain must replay
    it). ``webhook_secret`` is the value Label Studio sends back in the webhook header.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labelstudio_links")
    base_url = models.URLField(max_length=500)
    ls_project_id = models.PositiveIntegerField()
    api_key = models.CharField(max_length=500)
    webhook_secret = models.CharField(max_length=100)
    # Where Label Studio's browser and server reach Refrain (audio URLs, webhook); may be blank.
    refrain_url = models.URLField(max_length=500, blank=True)
    ls_webhook_id = models.PositiveIntegerField(null=True, blank=True)
    model_version = models.CharField(max_length=100, blank=True)
    # The taxonomy version whose labelling config Label Studio holds (null: linked before this was
    # recorded); a project on another version has its config updated by ``ls_config_update``.
    taxonomy_version = models.ForeignKey(
        TaxonomyVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="labelstudio_links",
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_pulled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["base_url", "ls_project_id"], name="labelstudio_link_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} ↔ {self.base_url} project {self.ls_project_id}"


class LabelStudioTask(models.Model):
    """Which Label Studio task holds a clip in a linked project (one per clip and link)."""

    link = models.ForeignKey(LabelStudioLink, on_delete=models.CASCADE, related_name="tasks")
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="labelstudio_tasks")
    ls_task_id = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    # A second opinion asked in Label Studio for a Refrain relabel task: the first Label Studio
    # annotation newer than ``relabel_after`` (the task's highest annotation id when it was asked)
    # answers that relabel task (services.ls_request_second_opinion).
    relabel_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    relabel_after = models.PositiveIntegerField(null=True, blank=True)
    relabel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["link", "clip"], name="labelstudio_task_clip_unique"),
            models.UniqueConstraint(
                fields=["link", "ls_task_id"], name="labelstudio_task_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"clip {self.clip_id} = LS task {self.ls_task_id}"


class LabelStudioUser(models.Model):
    """A Label Studio user id and the email Refrain learnt for it on a link (from a pull, a webhook
    or a users file), so export files, which name annotators by id only, map to the same people
    offline."""

    link = models.ForeignKey(LabelStudioLink, on_delete=models.CASCADE, related_name="users")
    ls_user_id = models.PositiveIntegerField()
    email = models.CharField(max_length=254)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["link", "ls_user_id"], name="labelstudio_user_unique")
        ]

    def __str__(self) -> str:
        return f"LS user {self.ls_user_id} = {self.email}"
