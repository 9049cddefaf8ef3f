"""Clip imports are held jobs: holder, heartbeat, attempts, status, and what a resume needs.

Imports that finished before this migration are ``done`` (one attempt); an unfinished one stays
``running`` with no worker recorded and no options, so the orphan sweep fails it with the reason.
"""

from django.db import migrations, models


def finished_are_done(apps, schema_editor):  # type: ignore[no-untyped-def]
    ImportJob = apps.get_model("annotation", "ImportJob")
    ImportJob.objects.filter(finished_at__isnull=False).update(status="done", attempts=1)
    ImportJob.objects.filter(finished_at__isnull=True).update(attempts=1)


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0006_token_scopes_expiry'),
    ]

    operations = [
        migrations.AddField(
            model_name='importjob',
            name='attempts',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='importjob',
            name='error',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='importjob',
            name='heartbeat_at',
            field=models.DateTimeField(blank=True, help_text='Refreshed by the worker while it runs the job.', null=True),
        ),
        migrations.AddField(
            model_name='importjob',
            name='items_done',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='importjob',
            name='options',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='importjob',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='running', max_length=10),
        ),
        migrations.AddField(
            model_name='importjob',
            name='sweep_notes',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='importjob',
            name='worker',
            field=models.CharField(blank=True, help_text='Celery node name (or process:<host>) of the worker that runs or last ran it.', max_length=255),
        ),
        migrations.AddField(
            model_name='importjob',
            name='worker_pid',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(finished_are_done, migrations.RunPython.noop),
    ]
