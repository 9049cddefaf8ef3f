from django.urls import path

from quality import views
from quality.dashboards import views as dashboards
from quality.explorer import views as explorer

urlpatterns = [
    path("p/<slug:slug>/quality/", views.dashboard, name="quality-dashboard"),
    path("p/<slug:slug>/quality/issues/", views.issue_list, name="quality-issues"),
    path("p/<slug:slug>/quality/cycle/", views.cycle_start, name="quality-cycle-start"),
    path("p/<slug:slug>/quality/export/", views.labels_export, name="quality-export"),
    path("p/<slug:slug>/settings/loop/", views.loop_settings, name="quality-loop-settings"),
    path("p/<slug:slug>/quality/clips/<int:clip_id>/", views.clip_issues, name="quality-clip"),
    path("p/<slug:slug>/explore/", explorer.explore, name="quality-explore"),
    path("p/<slug:slug>/explore/action/", explorer.explore_action, name="quality-explore-action"),
    path("p/<slug:slug>/jobs/", views.jobs, name="quality-jobs"),
    path("p/<slug:slug>/jobs/rows/", views.jobs_rows, name="quality-jobs-rows"),
    path(
        "p/<slug:slug>/jobs/<str:kind>/<int:job_pk>/retry/",
        views.job_retry,
        name="quality-job-retry",
    ),
    path(
        "p/<slug:slug>/jobs/<str:kind>/<int:job_pk>/cancel/",
        views.job_cancel,
        name="quality-job-cancel",
    ),
    path("p/<slug:slug>/dashboards/", dashboards.progress, name="dashboards-progress"),
    path("p/<slug:slug>/dashboards/taxonomy/", dashboards.taxonomy, name="dashboards-taxonomy"),
    path(
        "p/<slug:slug>/dashboards/annotators/", dashboards.annotators, name="dashboards-annotators"
    ),
    path("p/<slug:slug>/dashboards/issues/", dashboards.issues, name="dashboards-issues"),
    path("p/<slug:slug>/dashboards/models/", dashboards.models, name="dashboards-models"),
    path("p/<slug:slug>/dashboards/learning/", dashboards.learning, name="dashboards-learning"),
    path("p/<slug:slug>/dashboards/refresh/", dashboards.refresh, name="dashboards-refresh"),
]
