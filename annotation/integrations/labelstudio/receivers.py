"""Listeners of annotation events that concern Label Studio links (connected in
``AnnotationConfig.ready``)."""

from __future__ import annotations

from typing import Any

from annotation.models import LabelStudioLink


def config_update_on_taxonomy_changed(*, project_id: int, **_: Any) -> None:
    """A project moved to another taxonomy version: each of its links updates its Label Studio
    config on a worker (a remote call has no place in the request that changed the version)."""
    from annotation.integrations.labelstudio.tasks import ls_update_config

    for link_id in LabelStudioLink.objects.filter(project_id=project_id).values_list(
        "id", flat=True
    ):
        ls_update_config.delay(link_id)
