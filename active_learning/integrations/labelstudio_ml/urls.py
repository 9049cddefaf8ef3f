from django.urls import path

from active_learning.integrations.labelstudio_ml import views

# Label Studio appends the endpoint to the URL it is given (``.../ml``), without a trailing slash.
urlpatterns = [
    path(
        "integrations/label-studio/<int:link_id>/ml/health",
        views.health,
        name="labelstudio-ml-health",
    ),
    path(
        "integrations/label-studio/<int:link_id>/ml/setup", views.setup, name="labelstudio-ml-setup"
    ),
    path(
        "integrations/label-studio/<int:link_id>/ml/predict",
        views.predict,
        name="labelstudio-ml-predict",
    ),
    path(
        "integrations/label-studio/<int:link_id>/ml/webhook",
        views.webhook,
        name="labelstudio-ml-webhook",
    ),
    path(
        "integrations/label-studio/<int:link_id>/ml/train", views.train, name="labelstudio-ml-train"
    ),
]
