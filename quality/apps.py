from django.apps import AppConfig


class QualityConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "quality"

    def ready(self) -> None:
        # Training takes a clip's label the way this app decides it (REFRAIN_LABELS_PROVIDER).
        from active_learning.selectors import register_labels_provider
        from quality.selectors import consensus_training_labels

        register_labels_provider("consensus", consensus_training_labels)
