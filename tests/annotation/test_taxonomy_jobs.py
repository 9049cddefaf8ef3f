"""Taxonomy size: more than REFRAIN_MAX_TAXONOMY_NODES is refused with the reason; above
REFRAIN_TAXONOMY_INLINE_MAX_NODES the import runs on a worker as a job with progress."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotation.models import Taxonomy, TaxonomyImportJob, TaxonomyNode
from annotation.services import taxonomies as svc
from taxonomy.formats import TaxonomyFormatError
from tests.factories import UserFactory


def _paths(n_top: int, per: int) -> bytes:
    """``n_top`` roots with ``per`` children each: n_top * (per + 1) nodes."""
    lines = []
    for i in range(n_top):
        lines.append(f"Genre{i}")
        lines += [f"Genre{i}/Style{i}-{j}" for j in range(per)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def staff(db, fast_passwords) -> Client:
    c = Client()
    c.force_login(UserFactory(username="staff", is_staff=True))
    return c


@pytest.fixture
def limits(settings):
    settings.REFRAIN_MAX_TAXONOMY_NODES = 200
    settings.REFRAIN_TAXONOMY_INLINE_MAX_NODES = 20
    return settings


@pytest.mark.django_db
def test_oversized_taxonomy_is_refused_with_the_reason_everywhere(staff, limits):
    data = _paths(21, 9)  # 210 nodes > 200
    with pytest.raises(TaxonomyFormatError) as exc:
        svc.taxonomy_import(name="Big", data=data, filename="big.txt")
    assert "more than 200 nodes" in str(exc.value)
    assert "REFRAIN_MAX_TAXONOMY_NODES" in str(exc.value)

    page = staff.post(
        "/taxonomies/import/",
        {"name": "Big", "file": SimpleUploadedFile("big.txt", data)},
    )
    assert page.status_code == 200 and "more than 200 nodes" in page.content.decode()

    api = staff.post(
        "/api/v1/taxonomies/import",
        {"name": "Big", "file": SimpleUploadedFile("big.txt", data)},
    )
    assert api.status_code == 422 and "more than 200 nodes" in api.json()["detail"]
    assert not Taxonomy.objects.exists() and not TaxonomyImportJob.objects.exists()


@pytest.mark.django_db
def test_small_taxonomy_is_imported_inline(staff, limits):
    r = staff.post(
        "/api/v1/taxonomies/import",
        {"name": "Small", "file": SimpleUploadedFile("small.txt", _paths(2, 4))},
    )
    assert r.status_code == 201, r.content
    assert r.json()["version"]["n_nodes"] == 10 and r.json()["created"] is True
    assert not TaxonomyImportJob.objects.exists()


@pytest.mark.django_db
def test_progress_is_reported_batch_by_batch_and_parents_are_linked(limits, monkeypatch):
    monkeypatch.setattr(svc, "IMPORT_BATCH", 30)
    seen: list[tuple[int, int]] = []
    result = svc.taxonomy_import(
        name="P", data=_paths(10, 9), filename="p.txt", progress=lambda w, t: seen.append((w, t))
    )
    assert seen == [(30, 100), (60, 100), (90, 100), (100, 100)]
    nodes = TaxonomyNode.objects.filter(version=result.version)
    assert nodes.count() == 100
    child = nodes.get(path="Genre7/Style7-3")
    assert child.parent.path == "Genre7" and child.depth == 1 and child.is_leaf
    assert nodes.filter(parent__isnull=True).count() == 10


@pytest.mark.django_db
def test_large_import_goes_through_the_task_and_the_job_shows_progress(
    staff, limits, django_capture_on_commit_callbacks
):
    from refrain.celery import app

    data = _paths(10, 9)  # 100 nodes: above the inline limit of 20
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            r = staff.post(
                "/api/v1/taxonomies/import",
                {"name": "Large", "file": SimpleUploadedFile("large.txt", data)},
            )
        assert r.status_code == 202, r.content
        queued = r.json()
        assert queued["status"] == "queued"
        assert (queued["n_nodes_total"], queued["n_nodes_written"]) == (100, 0)
        assert not Taxonomy.objects.exists()  # nothing written in the request

        # While a worker runs it, the count written so far comes from the shared cache.
        job = TaxonomyImportJob.objects.get(pk=queued["id"])
        TaxonomyImportJob.objects.filter(pk=job.pk).update(status="running")
        cache.set(svc._progress_key(job.pk), 40)
        running = staff.get(f"/api/v1/taxonomies/imports/{job.pk}").json()
        assert (running["status"], running["n_nodes_written"], running["percent"]) == (
            "running",
            40,
            40.0,
        )
        page = staff.get(f"/taxonomies/imports/{job.pk}/").content.decode()
        assert "40 / 100" in page and 'http-equiv="refresh"' in page
        TaxonomyImportJob.objects.filter(pk=job.pk).update(status="queued")

        for callback in callbacks:  # the enqueue, as the request's commit would run it
            callback()
    finally:
        app.conf.task_always_eager = False
    done = staff.get(f"/api/v1/taxonomies/imports/{queued['id']}").json()
    assert done["status"] == "done", done
    assert (done["n_nodes_written"], done["percent"]) == (100, 100.0)
    assert "100 nodes" in done["summary"]
    version_id = done["taxonomy_version_id"]
    assert TaxonomyNode.objects.filter(version_id=version_id).count() == 100
    assert bytes(TaxonomyImportJob.objects.get(pk=queued["id"]).data) == b""  # no debris
    page = staff.get(f"/taxonomies/imports/{queued['id']}/").content.decode()
    assert "100 / 100" in page and 'http-equiv="refresh"' not in page


@pytest.mark.django_db
def test_the_page_hands_a_large_import_to_a_job(staff, limits, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = staff.post(
            "/taxonomies/import/",
            {"name": "Large", "file": SimpleUploadedFile("large.txt", _paths(10, 9))},
        )
    job = TaxonomyImportJob.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/taxonomies/imports/{job.pk}/"
    assert len(callbacks) == 1
    page = staff.get(r["Location"]).content.decode()
    assert "queued" in page and "0 / 100" in page


@pytest.mark.django_db
def test_a_job_that_fails_on_the_worker_says_why_and_keeps_nothing(limits):
    job = TaxonomyImportJob.objects.create(
        name="Broken", filename="x.txt", data=b"A\nA/B\nA/B\n", n_nodes_total=3
    )
    svc.taxonomy_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "duplicate" in job.error
    assert bytes(job.data) == b"" and job.finished_at is not None
    assert not Taxonomy.objects.exists()
    # A second delivery of the same message does nothing.
    assert svc.taxonomy_import_job_run(job_id=job.pk).status == "failed"


@pytest.mark.django_db
def test_jobs_are_visible_to_staff_and_their_creator_only(staff, limits, fast_passwords):
    job = TaxonomyImportJob.objects.create(name="J", data=b"A\n", n_nodes_total=1)
    outsider = Client()
    outsider.force_login(UserFactory(username="someone"))
    assert outsider.get(f"/api/v1/taxonomies/imports/{job.pk}").status_code == 404
    assert outsider.get(f"/taxonomies/imports/{job.pk}/").status_code == 404
    assert staff.get(f"/api/v1/taxonomies/imports/{job.pk}").status_code == 200
    assert (
        outsider.post(
            "/api/v1/taxonomies/import", {"name": "X", "file": SimpleUploadedFile("x.txt", b"A\n")}
        ).status_code
        == 403
    )


@pytest.mark.worker
def test_a_real_worker_imports_a_large_taxonomy(celery_worker_process, settings, fast_passwords):
    settings.REFRAIN_MAX_TAXONOMY_NODES = 50_000
    settings.REFRAIN_TAXONOMY_INLINE_MAX_NODES = 5_000
    c = Client()
    c.force_login(UserFactory(username="staff-w", is_staff=True))
    r = c.post(
        "/api/v1/taxonomies/import",
        {"name": "Worker", "file": SimpleUploadedFile("w.txt", _paths(100, 59))},  # 6,000 nodes
    )
    assert r.status_code == 202, r.content
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = c.get(f"/api/v1/taxonomies/imports/{job_id}").json()
        if body["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert body["status"] == "done", body
    assert body["n_nodes_written"] == body["n_nodes_total"] == 6000
    assert TaxonomyNode.objects.filter(version_id=body["taxonomy_version_id"]).count() == 6000


@pytest.mark.django_db
def test_a_job_whose_worker_died_is_failed_after_the_time_limit(settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.CELERY_TASK_TIME_LIMIT = 600
    now = timezone.now()
    dead = TaxonomyImportJob.objects.create(
        name="Dead", data=b"A\n", status="running", started_at=now - timedelta(seconds=700)
    )
    alive = TaxonomyImportJob.objects.create(
        name="Alive", data=b"A\n", status="running", started_at=now - timedelta(seconds=300)
    )
    assert svc.taxonomy_import_jobs_fail_stale(now=now) == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "failed" and "worker stopped" in dead.error and bytes(dead.data) == b""
    assert alive.status == "running"
