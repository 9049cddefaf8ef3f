from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from annotation.auth import ThrottledLoginView
from refrain.api import api
from refrain.health import healthz, livez

urlpatterns = [
    # Health for the proxy, the orchestrator and monitoring: public, no secrets (refrain/health.py).
    path("healthz", healthz, name="healthz"),
    path("livez", livez, name="livez"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Throttled per username and address (annotation.auth; the admin's login shares the backend).
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("annotation.integrations.labelstudio.urls")),
    path("", include("active_learning.integrations.labelstudio_ml.urls")),
    path("", include("annotation.urls")),
    path("", include("active_learning.urls")),
    path("", include("quality.urls")),
]
