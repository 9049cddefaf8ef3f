"""Admin for feature sets and model versions: artifacts are read-only; retrain on demand.

Scheduled retraining is the relabel cycle's schedule (``quality.services.schedule``), a
django-celery-beat ``PeriodicTask`` row edited in the Periodic tasks admin.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from active_learning.models import FeatureSet, LoopPolicy, ModelVersion
from active_learning.services.features import FeatureBackendError, feature_set_start
from active_learning.services.training import model_train_start
from annotation.admin import ProjectAdmin as AnnotationProjectAdmin
from annotation.models import Project


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class LoopPolicyInline(admin.StackedInline):
    """The project's loop policy, edited on the project's own admin page."""

    model = LoopPolicy
    can_delete = False
    min_num = max_num = 1  # every project has exactly one (see services/policy.py)


# The loop's policy lives in this app, above annotation; annotation's project admin gets it here.
admin.site.unregister(Project)


@admin.register(Project)
class ProjectAdmin(AnnotationProjectAdmin):
    inlines = [*AnnotationProjectAdmin.inlines, LoopPolicyInline]
    list_display = (*AnnotationProjectAdmin.list_display, "acquisition_strategy")
    list_select_related = (*AnnotationProjectAdmin.list_select_related, "loop_policy")

    @admin.display(description="acquisition strategy", ordering="loop_policy__acquisition_strategy")
    def acquisition_strategy(self, obj: Project) -> str:
        return obj.loop_policy.get_acquisition_strategy_display()


@admin.register(FeatureSet)
class FeatureSetAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "backend",
        "backend_version",
        "status",
        "dim",
        "n_clips",
        "n_done",
        "n_failed",
        "n_left",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "backend", "project")
    readonly_fields = [f.name for f in FeatureSet._meta.fields]
    actions = ["extract_again"]

    @admin.action(description="Extract features again (resume unfinished, add new clips)")
    def extract_again(self, request: HttpRequest, queryset: QuerySet[FeatureSet]) -> None:
        for fs in queryset.select_related("project"):
            try:
                started = feature_set_start(
                    project=fs.project, backend=fs.backend, options=fs.options
                )
            except FeatureBackendError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{fs.project}: feature set {started.id} {started.status}")


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "project",
        "number",
        "status",
        "trigger",
        "kind",
        "device",
        "n_labelled",
        "hierarchical_f1",
        "leaf_accuracy",
        "created_at",
    )
    list_filter = ("status", "trigger", "project")
    readonly_fields = [
        *(f.name for f in ModelVersion._meta.fields if f.name != "metrics"),
        "metrics_table",
    ]
    exclude = ("metrics",)
    actions = ["retrain"]

    @admin.display(description="hier. F1")
    def hierarchical_f1(self, obj: ModelVersion) -> str:
        value = (obj.metrics or {}).get("hier_f1")
        return "" if value is None else f"{value:.3f}"

    @admin.display(description="leaf acc.")
    def leaf_accuracy(self, obj: ModelVersion) -> str:
        value = (obj.metrics or {}).get("leaf_accuracy")
        return "" if value is None else f"{value:.3f}"

    @admin.display(description="metrics (out-of-sample)")
    def metrics_table(self, obj: ModelVersion) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metrics or {}, indent=1))

    @admin.action(description="Retrain these projects now")
    def retrain(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for project in Project.objects.filter(model_versions__in=queryset).distinct():
            mv = model_train_start(project=project, trigger=ModelVersion.Trigger.MANUAL)
            self.message_user(request, f"{project}: model v{mv.number} queued")
