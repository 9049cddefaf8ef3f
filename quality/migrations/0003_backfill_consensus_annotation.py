"""Point each clip labelled by several people at the annotation its stored consensus agrees with
(Clip.consensus_annotation, read by annotation.selectors.current_labels), for consensus rows
computed before the field existed. The same rule as quality.services.consensus._agreeing_annotations."""

from collections import defaultdict

from django.db import migrations


def backfill(apps, schema_editor):
    Clip = apps.get_model("annotation", "Clip")
    Annotation = apps.get_model("annotation", "Annotation")
    AnnotationLabel = apps.get_model("annotation", "AnnotationLabel")
    ClipConsensus = apps.get_model("quality", "ClipConsensus")
    rows = ClipConsensus.objects.filter(n_annotations__gte=2).values_list("clip_id", "node_ids")
    consensus = {c: set(nodes) for c, nodes in rows.iterator() if nodes}
    clip_ids = list(consensus)
    for start in range(0, len(clip_ids), 5000):
        part = clip_ids[start : start + 5000]
        sets = defaultdict(set)
        for ann_id, node_id in AnnotationLabel.objects.filter(
            annotation__clip_id__in=part
        ).values_list("annotation_id", "node_id"):
            sets[ann_id].add(node_id)
        pins = {}
        for clip_id, ann_id in (
            Annotation.objects.filter(clip_id__in=part)
            .order_by("clip_id", "-created_at", "-id")
            .values_list("clip_id", "id")
        ):
            if clip_id not in pins and sets.get(ann_id) == consensus[clip_id]:
                pins[clip_id] = ann_id
        Clip.objects.bulk_update(
            [Clip(pk=c, consensus_annotation_id=a) for c, a in pins.items()],
            ["consensus_annotation"],
            batch_size=2000,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("quality", "0002_job_heartbeats"),
        ("annotation", "0008_clip_consensus_annotation"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
