from django.urls import path

from active_learning import views

urlpatterns = [
    path("p/<slug:slug>/models/", views.project_models, name="project-models"),
]
