"""Feature sets and model versions point at storage keys, not absolute paths (issue 16).

``store_path``/``artifact_path`` held absolute paths under ``ARTIFACT_ROOT``; the renamed
``store_key``/``artifact_key`` hold the same location relative to the artifacts storage, so another
machine (or a bucket) resolves them. Rows whose path lies under this machine's ``ARTIFACT_ROOT``
are rewritten; a path outside it is left as it was (it could not be reached before either) and
reads of it fail with "not found".

Musicnn feature sets stored the local folder of the weights in their options; the folder now comes
from each machine's copy of the artifacts storage (it differs between workers), so it is dropped
from the options, which are part of a set's identity (an unchanged request finds the set again).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import migrations


def _relative(value: str, root: Path) -> str:
    if not value or not Path(value).is_absolute():
        return value
    try:
        return Path(value).resolve().relative_to(root).as_posix()
    except ValueError:
        try:
            return Path(value).relative_to(root).as_posix()
        except ValueError:
            return value


def _to_keys(apps, schema_editor) -> None:
    root = Path(settings.ARTIFACT_ROOT).resolve()
    FeatureSet = apps.get_model("active_learning", "FeatureSet")
    ModelVersion = apps.get_model("active_learning", "ModelVersion")
    for fs in FeatureSet.objects.exclude(store_key="").only("id", "store_key").iterator():
        key = _relative(fs.store_key, root)
        if key != fs.store_key:
            FeatureSet.objects.filter(id=fs.id).update(store_key=key)
    for mv in ModelVersion.objects.exclude(artifact_key="").only("id", "artifact_key").iterator():
        key = _relative(mv.artifact_key, root)
        if key != mv.artifact_key:
            ModelVersion.objects.filter(id=mv.id).update(artifact_key=key)


def _without_weights_dir(options):
    if not isinstance(options, dict):
        return options
    return {
        k: _without_weights_dir(v) if isinstance(v, dict) else v
        for k, v in options.items()
        if k != "weights_dir"
    }


def _drop_weights_dirs(apps, schema_editor) -> None:
    FeatureSet = apps.get_model("active_learning", "FeatureSet")
    for fs in FeatureSet.objects.filter(backend__contains="musicnn").only("id", "options"):
        cleaned = _without_weights_dir(fs.options)
        if cleaned != fs.options:
            FeatureSet.objects.filter(id=fs.id).update(options=cleaned)


def _to_paths(apps, schema_editor) -> None:
    root = Path(settings.ARTIFACT_ROOT)
    FeatureSet = apps.get_model("active_learning", "FeatureSet")
    ModelVersion = apps.get_model("active_learning", "ModelVersion")
    for fs in FeatureSet.objects.exclude(store_key="").only("id", "store_key").iterator():
        if not Path(fs.store_key).is_absolute():
            FeatureSet.objects.filter(id=fs.id).update(store_key=str(root / fs.store_key))
    for mv in ModelVersion.objects.exclude(artifact_key="").only("id", "artifact_key").iterator():
        if not Path(mv.artifact_key).is_absolute():
            ModelVersion.objects.filter(id=mv.id).update(artifact_key=str(root / mv.artifact_key))


class Migration(migrations.Migration):
    dependencies = [("active_learning", "0005_drop_prediction")]

    operations = [
        migrations.RenameField("featureset", "store_path", "store_key"),
        migrations.RenameField("modelversion", "artifact_path", "artifact_key"),
        migrations.RunPython(_to_keys, _to_paths),
        migrations.RunPython(_drop_weights_dirs, migrations.RunPython.noop),
    ]
