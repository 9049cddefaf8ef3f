from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from annotation.models import (
    Annotation,
    AnnotationLabel,
    ApiToken,
    Assignment,
    Clip,
    ImportJob,
    Membership,
    Project,
    Task,
    Taxonomy,
    TaxonomyImportJob,
    TaxonomyNode,
    TaxonomyVersion,
)


class TaxonomyVersionInline(admin.TabularInline):
    model = TaxonomyVersion
    fields = (
        "number",
        "source_format",
        "source_name",
        "n_nodes",
        "max_depth",
        "is_dag",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Taxonomy)
class TaxonomyAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    inlines = [TaxonomyVersionInline]


@admin.register(TaxonomyVersion)
class TaxonomyVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "source_format", "n_nodes", "max_depth", "is_dag", "created_at")
    list_filter = ("source_format", "is_dag")
    readonly_fields = ("content_sha256", "changes")


@admin.register(TaxonomyNode)
class TaxonomyNodeAdmin(admin.ModelAdmin):
    list_display = ("path", "key", "depth", "index", "version", "is_leaf")
    list_filter = ("version", "depth", "is_leaf")
    search_fields = ("path", "key", "name")
    raw_id_fields = ("parent", "extra_parents")
    list_select_related = ("version__taxonomy",)


class MembershipInline(admin.TabularInline):
    model = Membership
    raw_id_fields = ("user",)
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "taxonomy_version", "overlap", "blind")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "slug")
    inlines = [MembershipInline]
    list_select_related = ("taxonomy_version__taxonomy",)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role", "created_at")
    list_filter = ("role", "project")
    raw_id_fields = ("user",)


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "project",
        "status",
        "format",
        "duration_s",
        "sample_rate",
        "channels",
    )
    list_filter = ("status", "format", "project")
    search_fields = ("external_id", "original_name", "sha256", "storage_key")
    # The annotation the consensus agrees with is kept by the consensus service, not edited here.
    readonly_fields = ("sha256", "size_bytes", "error", "consensus_annotation")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "clip", "kind", "status", "priority", "reason", "overlap", "n_submitted")
    list_filter = ("kind", "status", "project")
    search_fields = ("reason", "clip__external_id")
    raw_id_fields = ("clip",)


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("task", "user", "status", "lease_expires_at", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("task", "user")


class AnnotationLabelInline(admin.TabularInline):
    model = AnnotationLabel
    raw_id_fields = ("node",)
    readonly_fields = ("node", "explicit")
    extra = 0
    can_delete = False


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """Read-only: annotations are an audit trail; corrections are new annotations."""

    list_display = ("id", "clip", "kind", "source", "user", "unsure", "created_at")
    list_filter = ("kind", "unsure", "taxonomy_version")
    search_fields = ("source", "clip__external_id", "note")
    raw_id_fields = ("clip", "task", "assignment", "supersedes", "user")
    inlines = [AnnotationLabelInline]

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = (
        "source",
        "project",
        "status",
        "n_imported",
        "n_duplicate",
        "n_failed",
        "attempts",
        "started_at",
    )
    list_filter = ("project",)
    readonly_fields = ("problems", "sweep_notes")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made by their owners (the secret is shown to them once); admins see and revoke."""

    list_display = (
        "prefix",
        "name",
        "user",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("prefix", "name", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = (
        "user",
        "prefix",
        "digest",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
    )
    actions = ["revoke_tokens"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        n = queryset.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason="revoked by an admin"
        )
        self.message_user(request, f"Revoked {n} token(s).")


@admin.register(TaxonomyImportJob)
class TaxonomyImportJobAdmin(admin.ModelAdmin):
    list_display = ("pk", "name", "status", "n_nodes_written", "n_nodes_total", "created_at")
    list_filter = ("status",)
    exclude = ("data",)
    readonly_fields = (
        "name",
        "filename",
        "format",
        "root",
        "status",
        "n_nodes_total",
        "n_nodes_written",
        "error",
        "summary",
        "version",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
