from django.apps import AppConfig


class QualityConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "quality"

    def ready(self) -> None:
        # Imported here, not at module level: models and tasks need the app registry loaded.
        from annotation import events
        from quality import receivers

        events.annotation_committed.connect(
            receivers.on_annotation_committed, dispatch_uid="quality.on_annotation_committed"
        )
        events.review_decided.connect(
            receivers.on_review_decided, dispatch_uid="quality.on_review_decided"
        )
        from django.db.models.signals import post_save

        from active_learning.models import ModelVersion

        post_save.connect(
            receivers.on_model_version_saved,
            sender=ModelVersion,
            dispatch_uid="quality.on_model_version_saved",
        )
