"""Trigram indexes on the explorer's search text and id lists (PostgreSQL with pg_trgm), so ``q=``,
``node=`` and ``annotator=`` (``LIKE '%...%'``) are index scans instead of scans of every summary
row. Elsewhere, or where the database user may not create the extension, nothing is done and the
filters still work, by a scan."""

from django.db import DatabaseError, migrations, transaction

INDEXES = {
    "clip_summary_search_trgm": "search",
    "clip_summary_labels_trgm": "label_node_ids",
    "clip_summary_annotators_trgm": "annotator_ids",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            for name, column in INDEXES.items():
                schema_editor.execute(
                    f"CREATE INDEX IF NOT EXISTS {name} ON quality_clipsummary "
                    f"USING gin ({column} gin_trgm_ops)"
                )
    except DatabaseError:
        pass  # no pg_trgm here: the search scans


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("quality", "0004_clip_summary")]
    operations = [migrations.RunPython(forwards, backwards)]
