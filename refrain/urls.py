from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from refrain.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("annotation.integrations.labelstudio.urls")),
    path("", include("annotation.urls")),
    path("", include("active_learning.urls")),
    path("", include("quality.urls")),
]
