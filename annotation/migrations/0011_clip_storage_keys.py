"""Clips name their audio by a storage and a key instead of an absolute path (issue 16).

``source_path`` becomes ``storage_key`` with ``storage`` saying where the key lives: rows whose file
is under MEDIA_ROOT (uploads) become keys of the media storage, relative to it; every other row
stays a local file read in place from an import root (its key is the absolute path). The served
copy's absolute path becomes its key in the media storage; one outside MEDIA_ROOT is forgotten and
made again on first use.
"""

import os

from django.conf import settings
from django.db import migrations, models


def _relative_to_media(path: str) -> str | None:
    if not path:
        return None
    root = os.path.realpath(str(settings.MEDIA_ROOT))
    real = os.path.realpath(path)
    if real != root and real.startswith(root + os.sep):
        return os.path.relpath(real, root).replace(os.sep, "/")
    return None


def paths_to_keys(apps, schema_editor):
    Clip = apps.get_model("annotation", "Clip")
    batch = []
    for clip in Clip.objects.only("pk", "storage_key", "served_key").iterator(chunk_size=2000):
        media_key = _relative_to_media(clip.storage_key)
        served_key = _relative_to_media(clip.served_key) or ""
        if media_key is None and served_key == clip.served_key:
            continue
        if media_key is not None:
            clip.storage = "media"
            clip.storage_key = media_key
        clip.served_key = served_key
        batch.append(clip)
        if len(batch) >= 2000:
            Clip.objects.bulk_update(batch, ["storage", "storage_key", "served_key"])
            batch.clear()
    if batch:
        Clip.objects.bulk_update(batch, ["storage", "storage_key", "served_key"])


def keys_to_paths(apps, schema_editor):
    Clip = apps.get_model("annotation", "Clip")
    root = str(settings.MEDIA_ROOT)
    for clip in Clip.objects.filter(storage="media").iterator(chunk_size=2000):
        clip.storage_key = os.path.join(root, clip.storage_key)
        clip.save(update_fields=["storage_key"])
    for clip in Clip.objects.exclude(served_key="").iterator(chunk_size=2000):
        clip.served_key = os.path.join(root, clip.served_key)
        clip.save(update_fields=["served_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0010_labelstudio_task_relabel"),
    ]

    operations = [
        migrations.RenameField("clip", "source_path", "storage_key"),
        migrations.RenameField("clip", "served_path", "served_key"),
        migrations.AddField(
            model_name="clip",
            name="storage",
            field=models.CharField(
                choices=[("local", "Local file"), ("media", "Media storage"), ("s3", "S3 bucket")],
                default="local",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="clip",
            name="storage_key",
            field=models.CharField(blank=True, max_length=1100),
        ),
        migrations.RunPython(paths_to_keys, keys_to_paths),
        migrations.AlterField(
            model_name="clip",
            name="served_key",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddIndex(
            model_name="clip",
            index=models.Index(fields=["project", "storage_key"], name="clip_project_key_idx"),
        ),
    ]
