from django.apps import AppConfig
from django.db.models.signals import post_save


class ActiveLearningConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "active_learning"

    def ready(self) -> None:
        # The loop's policy lives here, above annotation: a new project gets its row from a
        # listener, so annotation never imports this app. Imported here: models need the registry.
        from active_learning.events import model_version_done
        from active_learning.integrations.labelstudio_ml import command
        from active_learning.integrations.labelstudio_ml.receivers import (
            predictions_push_on_model_done,
        )
        from active_learning.services.policy import loop_policy_on_project_saved
        from annotation.models import Project

        post_save.connect(
            loop_policy_on_project_saved,
            sender=Project,
            dispatch_uid="active_learning.loop_policy_on_project_saved",
        )
        # Label Studio: the newest model's predictions go to every link after each retrain, and
        # `manage.py labelstudio` gains push-predictions and ml-backend.
        model_version_done.connect(
            predictions_push_on_model_done,
            dispatch_uid="active_learning.labelstudio_ml.predictions_push_on_model_done",
        )
        command.register()
