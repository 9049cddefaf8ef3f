from django.urls import path

from annotation import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/new/", views.project_create, name="project-create"),
    path("account/tokens/", views.account_tokens, name="account-tokens"),
    path("taxonomies/import/", views.taxonomy_import_page, name="taxonomy-import"),
    path(
        "taxonomies/imports/<int:job_id>/",
        views.taxonomy_import_job_page,
        name="taxonomy-import-job",
    ),
    path("p/<slug:slug>/annotate/", views.annotate, name="annotate"),
    path("p/<slug:slug>/review/", views.review_list, name="review-list"),
    path("p/<slug:slug>/review/next/", views.review_next, name="review-next"),
    path("p/<slug:slug>/review/<int:clip_id>/", views.review_clip, name="review-clip"),
    path("p/<slug:slug>/settings/", views.project_settings, name="project-settings"),
    path("p/<slug:slug>/members/", views.project_members, name="project-members"),
    path("p/<slug:slug>/clips/", views.project_clips, name="project-clips"),
    path("p/<slug:slug>/queue/", views.project_queue, name="project-queue"),
    path("clips/<int:clip_id>/audio", views.clip_audio, name="clip-audio"),
    path("clips/<int:clip_id>/spectrogram.png", views.clip_spectrogram, name="clip-spectrogram"),
]
