"""PostgreSQL-only indexes of the explorer's summary table.

* descending ``NULLS LAST`` sort indexes of the columns that may be NULL (SQLite cannot index that
  order; there those sorts sort);
* trigram indexes (pg_trgm) on the search text and the id lists, so ``q=``, ``node=`` and
  ``annotator=`` (``LIKE '%...%'``) are index scans instead of scans of every summary row. Where the
  database user may not create the extension they are skipped and the filters still work, by a
  scan.
"""

from django.db import DatabaseError, migrations, transaction

DESCENDING = ("duration_s", "quality", "agreement", "prediction_prob")
INDEXES = {
    "clip_summary_search_trgm": "search",
    "clip_summary_labels_trgm": "label_node_ids",
    "clip_summary_annotators_trgm": "annotator_ids",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in DESCENDING:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS clip_sum_{column}_desc ON quality_clipsummary "
            f"(project_id, {column} DESC NULLS LAST, clip_id DESC)"
        )
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
        for name in [*INDEXES, *(f"clip_sum_{c}_desc" for c in DESCENDING)]:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("quality", "0004_clip_summary")]
    operations = [migrations.RunPython(forwards, backwards)]
