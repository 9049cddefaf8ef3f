from django.urls import path

from annotation.integrations.labelstudio import views

urlpatterns = [
    path(
        "integrations/label-studio/<int:link_id>/webhook",
        views.webhook,
        name="labelstudio-webhook",
    ),
    path(
        "integrations/label-studio/audio/<str:token>",
        views.clip_audio,
        name="labelstudio-audio",
    ),
]
