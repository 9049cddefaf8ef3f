from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"

    def ready(self) -> None:
        from annotation import (
            checks,  # noqa: F401  (registers the deploy checks)
            events,
        )
        from annotation.integrations.labelstudio.receivers import (
            config_update_on_taxonomy_changed,
        )

        events.taxonomy_changed.connect(
            config_update_on_taxonomy_changed,
            dispatch_uid="annotation.labelstudio.config_update_on_taxonomy_changed",
        )
