"""Creating projects and changing their labelling policy."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from annotation import events
from annotation.models import Membership, Project, Task, TaxonomyVersion
from refrain.errors import Invalid


class ProjectError(Invalid, ValueError):
    """A project setting that cannot be applied; the message says why."""


MAX_OVERLAP = 20


def _unique_slug(name: str) -> str:
    base = slugify(name)[:70] or "project"
    slug, n = base, 2
    while Project.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def project_create(
    *,
    name: str,
    taxonomy_version: TaxonomyVersion,
    user: AbstractBaseUser,
    description: str = "",
    overlap: int = 1,
    blind: bool = True,
    lease_seconds: int = 15 * 60,
) -> Project:
    """A new project; its creator becomes its first admin."""
    name = name.strip()
    if not name:
        raise ProjectError("a project name is required")
    _check_policy(overlap=overlap, lease_seconds=lease_seconds)
    with transaction.atomic():
        project = Project.objects.create(
            name=name,
            slug=_unique_slug(name),
            description=description,
            taxonomy_version=taxonomy_version,
            overlap=overlap,
            blind=blind,
            lease_seconds=lease_seconds,
            created_by=user,
        )
        Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
    return project


def _check_policy(*, overlap: int, lease_seconds: int) -> None:
    if not 1 <= overlap <= MAX_OVERLAP:
        raise ProjectError(f"overlap must be between 1 and {MAX_OVERLAP}, got {overlap}")
    if not 60 <= lease_seconds <= 24 * 3600:
        raise ProjectError("the lease must be between 1 minute and 24 hours")


def project_update_policy(
    *,
    project: Project,
    overlap: int | None = None,
    blind: bool | None = None,
    lease_seconds: int | None = None,
    taxonomy_version: TaxonomyVersion | None = None,
) -> Project:
    """Change overlap, blind mode, lease or taxonomy version.

    A new overlap applies to the open label tasks too; tasks that already have enough submissions
    under the new overlap are closed.
    """
    new_overlap = project.overlap if overlap is None else overlap
    new_lease = project.lease_seconds if lease_seconds is None else lease_seconds
    _check_policy(overlap=new_overlap, lease_seconds=new_lease)
    if taxonomy_version is not None and taxonomy_version.taxonomy_id != (
        project.taxonomy_version.taxonomy_id
    ):
        # Switching trees entirely is a new project; a newer version of the same tree is fine.
        raise ProjectError(
            f"{taxonomy_version} is not a version of {project.taxonomy_version.taxonomy.name}"
        )
    with transaction.atomic():
        fields = []
        if new_overlap != project.overlap:
            project.overlap = new_overlap
            fields.append("overlap")
            open_label = Task.objects.filter(
                project=project, status=Task.Status.OPEN, kind=Task.Kind.LABEL
            )
            open_label.update(overlap=new_overlap)
            open_label.filter(n_submitted__gte=F("overlap")).update(
                status=Task.Status.DONE, completed_at=timezone.now()
            )
        if blind is not None and blind != project.blind:
            project.blind = blind
            fields.append("blind")
        if new_lease != project.lease_seconds:
            project.lease_seconds = new_lease
            fields.append("lease_seconds")
        if taxonomy_version is not None and taxonomy_version.pk != project.taxonomy_version_id:
            events.publish(
                events.taxonomy_changed,
                project_id=project.pk,
                old_version_id=project.taxonomy_version_id,
                new_version_id=taxonomy_version.pk,
            )
            project.taxonomy_version = taxonomy_version
            fields.append("taxonomy_version")
        if fields:
            project.save(update_fields=fields)
    return project
