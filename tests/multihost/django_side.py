"""What the multi-host test asks of Django, run as ``python -m tests.multihost.django_side <fn>
<json>`` inside a host's namespace with that host's environment (the web host: an admin's actions,
as the clips page and the jobs page would do them), printing its JSON result on the last line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def import_from_bucket(*, project_id: int, uri: str) -> dict[str, Any]:
    """Queue a bucket import for a ``cpu`` worker, as the clips page does."""
    from django.db import transaction

    from annotation.models import Project
    from annotation.services.clips import clips_import_bucket_submit

    with transaction.atomic():
        job = clips_import_bucket_submit(
            project=Project.objects.get(pk=project_id), uri=uri, labels_from_folders=True
        )
    return {"import_job": job.pk}


def clip_keys(*, project_id: int) -> dict[str, str]:
    """Each clip's storage key (the object it was imported from), by clip id."""
    from annotation.models import Clip

    return {
        str(pk): key
        for pk, key in Clip.objects.filter(project_id=project_id).values_list("pk", "storage_key")
    }


def features_start(*, project_id: int, chunk_size: int) -> dict[str, Any]:
    """A feature set in chunks of ``chunk_size`` clips, sent to the ``cpu`` queue."""
    from active_learning.services.features import feature_set_create
    from annotation.models import Project
    from refrain.celery import app

    fs = feature_set_create(project=Project.objects.get(pk=project_id), chunk_size=chunk_size)
    app.send_task(
        "active_learning.tasks.extract_features_for_project",
        args=[project_id],
        kwargs={"feature_set_id": fs.pk},
    )
    return {"feature_set": fs.pk}


def sweep() -> list[list[Any]]:
    """One orphan sweep, every running row suspect (the workers' answers decide)."""
    from quality.services.sweep import orphans_sweep

    return [[a.kind, a.id, a.action] for a in orphans_sweep(stale_seconds=0)]


def artifact_facts(*, project_id: int) -> dict[str, Any]:
    """The artifact keys the rows name and every key the artifacts storage holds; the media keys
    the clips name (served copies, visuals) and every key the media storage holds."""
    from django.core.files.storage import default_storage

    from active_learning.artifacts import artifact_keys
    from active_learning.models import FeatureSet, ModelVersion
    from annotation.models import Clip

    def media_keys(folder: str = "") -> list[str]:
        dirs, files = default_storage.listdir(folder)
        out = [f"{folder}/{f}" if folder else f for f in files]
        for d in dirs:
            out += media_keys(f"{folder}/{d}" if folder else d)
        return out

    clips = Clip.objects.filter(project_id=project_id)
    return {
        "feature_sets": list(
            FeatureSet.objects.filter(project_id=project_id).values_list("store_key", flat=True)
        ),
        "models": list(
            ModelVersion.objects.filter(project_id=project_id).values_list(
                "artifact_key", flat=True
            )
        ),
        "artifact_keys": artifact_keys(""),
        "served_keys": sorted({k for k in clips.values_list("served_key", flat=True) if k}),
        "media_keys": media_keys(),
    }


def _main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    django.setup()
    function, kwargs = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    print(json.dumps(globals()[function](**kwargs)))


if __name__ == "__main__":
    _main()
