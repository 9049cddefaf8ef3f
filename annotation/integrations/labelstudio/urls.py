from django.urls import path

from annotation.integrations.labelstudio import views

urlpatterns = [
    path("p/<slug:slug>/settings/labelstudio/", views.link_settings, name="labelstudio-settings"),
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
