"""Project membership: inviting people with a role, changing roles, removing them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from annotation.models import Membership, Project
from refrain.errors import Invalid


class MemberError(Invalid, ValueError):
    """A membership change that cannot be made; the message says why."""


def member_invite(*, project: Project, username_or_email: str, role: str) -> Membership:
    """Add an existing user to the project with ``role`` (or change their role if already in)."""
    if role not in Membership.Role.values:
        raise MemberError(f"unknown role {role!r}")
    ident = username_or_email.strip()
    if not ident:
        raise MemberError("give a username or an email address")
    users = list(
        get_user_model().objects.filter(Q(username__iexact=ident) | Q(email__iexact=ident))[:2]
    )
    if not users:
        raise MemberError(f"no user {ident!r}; ask an administrator to create the account first")
    if len(users) > 1:
        raise MemberError(f"{ident!r} matches more than one user; use the username")
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            project=project, user=users[0], defaults={"role": role}
        )
        if not created and membership.role != role:
            member_set_role(membership=membership, role=role)
    return membership


def member_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise MemberError(f"unknown role {role!r}")
    with transaction.atomic():
        if membership.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN:
            _require_another_admin(membership)
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def member_remove(*, membership: Membership) -> None:
    """Remove a member; their annotations stay (history is never lost)."""
    with transaction.atomic():
        if membership.role == Membership.Role.ADMIN:
            _require_another_admin(membership)
        membership.delete()


def _require_another_admin(membership: Membership) -> None:
    # Lock: the project's admin memberships, so two admins cannot demote each other at once.
    admins = list(
        Membership.objects.select_for_update()
        .filter(project_id=membership.project_id, role=Membership.Role.ADMIN)
        .values_list("pk", flat=True)
    )
    if [pk for pk in admins if pk != membership.pk] == []:
        raise MemberError("a project needs at least one admin; make someone else admin first")
