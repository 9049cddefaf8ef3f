"""Who may do what in a project. One place, so views and API endpoints ask the same questions.

Roles are per project (:class:`~annotation.models.Membership`): annotators label and see their own
work; reviewers also see everyone's annotations in the project and record review decisions; admins
also manage the project (settings, members, clips, the queue). Staff users may create projects and
import taxonomies; superusers may do anything.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from annotation.models import Assignment, Clip, Membership, Project
from refrain.errors import NotFound, PermissionDenied

Role = Membership.Role
_RANK = {Role.ANNOTATOR: 1, Role.REVIEWER: 2, Role.ADMIN: 3}


def membership_get(*, project_id: int, user: AbstractBaseUser | AnonymousUser) -> Membership | None:
    """The user's membership of a project, with the project and its taxonomy version loaded.

    Superusers without a membership get an in-memory admin membership, so they can manage any
    project without being listed as a member.
    """
    if not user.is_authenticated:
        return None
    membership = (
        Membership.objects.select_related("project", "project__taxonomy_version")
        .filter(project_id=project_id, user=user)
        .first()
    )
    if membership is None and user.is_superuser:
        project = Project.objects.select_related("taxonomy_version").filter(pk=project_id).first()
        if project is not None:
            membership = Membership(project=project, user=user, role=Role.ADMIN)
    return membership


def role_at_least(membership: Membership | None, role: str) -> bool:
    return membership is not None and _RANK[Role(membership.role)] >= _RANK[Role(role)]


def require_role(
    *, project_id: int, user: AbstractBaseUser | AnonymousUser, role: str
) -> Membership:
    """The membership if the user holds ``role`` or higher in the project.

    Raises
    ------
    NotFound
        When the user is not a member (the project's existence is not revealed).
    PermissionDenied
        When the user is a member with a lower role.
    """
    membership = membership_get(project_id=project_id, user=user)
    if membership is None:
        raise NotFound(f"project {project_id} not found among your projects")
    if not role_at_least(membership, role):
        raise PermissionDenied(
            f"this needs the {Role(role).label.lower()} role in {membership.project.name}; "
            f"you are {Role(membership.role).label.lower()}"
        )
    return membership


def can_create_projects(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def require_staff(user: AbstractBaseUser | AnonymousUser) -> None:
    if not can_create_projects(user):
        raise PermissionDenied("only staff may create projects and import taxonomies")


def clip_for_user(
    *, clip_id: int, user: AbstractBaseUser | AnonymousUser
) -> tuple[Clip, Membership]:
    """A clip the user may hear and see: reviewers and admins any clip of their projects,
    annotators only clips of tasks they hold or held (their own work).

    Raises
    ------
    NotFound
        Otherwise; whether the clip exists is not revealed.
    """
    clip = Clip.objects.select_related("project").filter(pk=clip_id).first()
    missing = NotFound(f"clip {clip_id} not found among your work")
    if clip is None:
        raise missing
    membership = membership_get(project_id=clip.project_id, user=user)
    if membership is None:
        raise missing
    if role_at_least(membership, Role.REVIEWER):
        return clip, membership
    if not Assignment.objects.filter(user=user, task__clip=clip).exists():
        raise missing
    return clip, membership
