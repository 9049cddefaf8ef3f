"""Admin: read-mostly views of cycles, runs and issues; rows change through services, not forms.

The relabel cycle's schedule is a django-celery-beat ``PeriodicTask`` named "relabel cycle <slug>"
(see ``quality.services.schedule``), edited under *Periodic tasks*; the action below creates a
nightly one for the selected projects' cycles.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from quality.models import AnnotatorQuality, ClipConsensus, LabelIssue, QualityCycle, QualityRun
from quality.services.schedule import cycle_schedule_set


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(QualityCycle)
class QualityCycleAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "trigger",
        "status",
        "steps_done",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "trigger", "project")
    actions = ["schedule_nightly"]

    @admin.action(
        description="Schedule these projects' cycles nightly at 03:00 (editable under Periodic tasks)"
    )
    def schedule_nightly(self, request: HttpRequest, queryset: QuerySet[QualityCycle]) -> None:

        projects = {c.project for c in queryset.select_related("project")}
        for project in projects:
            cycle_schedule_set(project=project, crontab_or_interval="0 3 * * *")
        self.message_user(request, f"scheduled {len(projects)} project(s)", messages.SUCCESS)


@admin.register(QualityRun)
class QualityRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "status",
        "model_version",
        "n_clips",
        "n_issues",
        "n_routed",
        "created_at",
    )
    list_filter = ("status", "project")


@admin.register(LabelIssue)
class LabelIssueAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "clip",
        "issue_type",
        "node",
        "depth",
        "score",
        "rank",
        "status",
        "run",
    )
    list_filter = ("status", "issue_type", "depth", "project")
    raw_id_fields = (
        "clip",
        "annotation",
        "relabel_task",
        "review_task",
        "resolving_annotation",
        "node",
    )


@admin.register(ClipConsensus)
class ClipConsensusAdmin(ReadOnlyAdmin):
    list_display = (
        "clip",
        "project",
        "quality",
        "agreement",
        "n_annotations",
        "scope",
        "computed_at",
    )
    list_filter = ("project", "scope")
    raw_id_fields = ("clip",)


@admin.register(AnnotatorQuality)
class AnnotatorQualityAdmin(ReadOnlyAdmin):
    list_display = ("user", "project", "quality", "weight", "n_annotations", "computed_at")
    list_filter = ("project",)
