"""The loop's policy, feature sets, model versions and their predictions.

Large arrays live in the artifacts storage (``active_learning.artifacts``: a local folder or a bucket),
keyed by the rows, as .npy files that load with mmap (from a local cache when the storage is remote):
a feature set is an (N, D) float32 matrix, a model version's predictions an (N, K) float32 matrix.
The rows hold what pages, filters and audits need; the predictions are read from the model
version's ``pred_probs.npy`` (``active_learning.selectors.prediction_matrix``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotation.models import Project, TaxonomyVersion
from refrain.jobs import HeldJob


class LoopPolicy(models.Model):
    """How the relabel loop runs for one project: what it extracts and retrains, when, how many
    suspects it routes and how it acquires. Every project has one: a listener creates it with the
    project (``ActiveLearningConfig.ready``); its admins edit it on the "Model & loop" page."""

    class AcquisitionStrategy(models.TextChoices):
        RANDOM = "random", "Random"
        UNCERTAINTY = "uncertainty", "Hierarchical uncertainty"
        DIVERSITY = "diversity", "Diversity (k-center)"
        BADGE = "badge", "Uncertainty × diversity"
        RELABEL_OR_NEW = "relabel_or_new", "Relabel or label new (ActiveLab-style)"

    class ModelKind(models.TextChoices):
        HIERARCHICAL = "hierarchical", "Embedding model, per-parent softmax (CPU is enough)"
        FLAT = "flat", "Embedding model, flat sigmoids + consistency projection"
        CNN = "cnn", "CNN on CQT patches, trained end-to-end (wants a GPU worker)"

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="loop_policy"
    )
    relabel_budget = models.PositiveIntegerField(
        default=50, help_text="Most suspect clips routed for a second opinion per quality run."
    )
    retrain_every = models.PositiveIntegerField(
        default=200, help_text="Start a relabel cycle after this many new annotations (0 = never)."
    )
    acquisition_strategy = models.CharField(
        max_length=30,
        choices=AcquisitionStrategy.choices,
        default=AcquisitionStrategy.RELABEL_OR_NEW,
    )
    acquisition_batch_size = models.PositiveIntegerField(default=50)
    acquisition_relabel_share = models.FloatField(
        default=0.3, help_text="Largest share of an acquisition batch that may be relabels."
    )
    embedding_backend = models.CharField(max_length=60, default="logmel-stats")
    model_kind = models.CharField(
        max_length=20,
        choices=ModelKind.choices,
        default=ModelKind.HIERARCHICAL,
        help_text="What the relabel cycle retrains. The CNN also extracts CQT patches (62 KB a clip) "
        "and belongs on a GPU worker; the embeddings still serve diversity sampling.",
    )

    class Meta:
        verbose_name = "loop policy"
        verbose_name_plural = "loop policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(acquisition_relabel_share__gte=0) & Q(acquisition_relabel_share__lte=1),
                name="loop_policy_relabel_share_unit",
            ),
        ]

    def __str__(self) -> str:
        return f"loop policy of {self.project}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class FeatureSet(HeldJob):
    """One embedding backend's features for a project's clips, extracted in resumable chunks."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feature_sets")
    backend = models.CharField(max_length=60)
    backend_version = models.CharField(max_length=60, blank=True)
    options = models.JSONField(default=dict, blank=True)
    dim = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    n_clips = models.PositiveIntegerField(default=0)
    n_done = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    # [{"clip": id, "reason": "..."}]: clips whose audio would not decode are listed, not dropped.
    failures = models.JSONField(default=list, blank=True)
    # The extraction plan: clips in chunks of ``chunk_size`` (the plan file sits next to the store),
    # so a re-run enqueues exactly the chunks whose files are missing.
    chunk_size = models.PositiveIntegerField(default=64)
    n_chunks = models.PositiveIntegerField(default=0)
    # Key of the (N, D) matrix in the artifacts storage ("project_3/features/fs_12.npy").
    store_key = models.CharField(max_length=1000, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker started or resumed this extraction."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["project", "backend", "status"], name="featureset_lookup_idx")
        ]

    def __str__(self) -> str:
        return f"{self.backend} features of {self.project} ({self.status})"

    @property
    def n_left(self) -> int:
        return max(0, self.n_clips - self.n_done - self.n_failed)


class ModelVersion(HeldJob):
    """A trained model with its cross-validated predictions, metrics and training snapshot."""

    class Trigger(models.TextChoices):
        MANUAL = "manual", "On demand"
        SCHEDULE = "schedule", "Schedule"
        ANNOTATIONS = "annotations", "After new annotations"
        CYCLE = "cycle", "Relabel cycle"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    taxonomy_version = models.ForeignKey(
        TaxonomyVersion, on_delete=models.PROTECT, related_name="model_versions"
    )
    feature_set = models.ForeignKey(
        FeatureSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    kind = models.CharField(max_length=60, default="hierarchical")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.MANUAL)
    hyperparameters = models.JSONField(default=dict, blank=True)
    # Hierarchical P/R/F1, per-depth macro F1, top-level and leaf accuracy, mAP (out-of-sample).
    metrics = models.JSONField(default=dict, blank=True)
    # Which annotations (ids, or the consensus run) the model was trained on.
    training_snapshot = models.JSONField(default=dict, blank=True)
    n_labelled = models.PositiveIntegerField(default=0)
    n_unlabelled = models.PositiveIntegerField(default=0)
    n_folds = models.PositiveSmallIntegerField(default=5)
    seed = models.IntegerField(default=0)
    device = models.CharField(max_length=20, blank=True)
    # Key prefix of the version's files in the artifacts storage ("project_3/model_4").
    artifact_key = models.CharField(max_length=1000, blank=True)
    # The Celery task that asked for this version: a redelivered message finds its row again.
    task_id = models.CharField(max_length=255, null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker started or resumed this training."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="model_version_unique"),
            models.UniqueConstraint(
                fields=["task_id"],
                condition=Q(task_id__isnull=False),
                name="model_version_task_unique",
            ),
        ]
        indexes = [models.Index(fields=["project", "status"], name="model_version_status_idx")]

    def __str__(self) -> str:
        return f"{self.project} model v{self.number} ({self.status})"
