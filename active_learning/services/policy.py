"""Every project gets its loop policy when it is created.

``annotation`` creates projects and knows nothing of the loop above it, so the policy row comes from
this ``post_save`` listener on ``Project``, connected in ``ActiveLearningConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from active_learning.models import LoopPolicy
from annotation.models import Project


def loop_policy_on_project_saved(
    sender: type[Project], instance: Project, created: bool, **kwargs: Any
) -> None:
    """Give a new project the default policy (a fixture that already holds its row keeps it)."""
    if not created:
        return
    policy, _ = LoopPolicy.objects.get_or_create(project_id=instance.pk)
    instance.loop_policy = policy  # cached: whoever made the project reads it without a query
