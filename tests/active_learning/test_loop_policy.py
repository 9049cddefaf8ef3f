"""The loop's policy lives in active_learning: every project gets one row when it is made (by a
listener; annotation never imports this app), fixtures keep their own, and the project admin edits
it inline without a query per listed project."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import serializers
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from active_learning.models import LoopPolicy
from annotation.models import Project
from annotation.services.projects import project_create
from tests.factories import ProjectFactory, UserFactory, make_taxonomy_version

pytestmark = pytest.mark.django_db


def test_a_new_project_gets_the_default_policy_and_reads_it_without_a_query(
    fast_passwords: None,
) -> None:
    project = project_create(
        name="Loop", taxonomy_version=make_taxonomy_version(), user=UserFactory()
    )
    with CaptureQueriesContext(connection) as queries:
        policy = project.loop_policy
    assert len(queries) == 0
    assert (policy.model_kind, policy.embedding_backend) == ("hierarchical", "logmel-stats")
    assert (policy.retrain_every, policy.relabel_budget) == (200, 50)
    assert policy.acquisition_strategy == LoopPolicy.AcquisitionStrategy.RELABEL_OR_NEW
    assert (policy.acquisition_batch_size, policy.acquisition_relabel_share) == (50, 0.3)
    assert LoopPolicy.objects.filter(project=project).count() == 1
    project.name = "Loop, renamed"
    project.save()  # a later save makes no second row and keeps the first
    assert LoopPolicy.objects.get(project=project).pk == project.pk
    project.delete()
    assert not LoopPolicy.objects.exists()


def test_the_factory_sets_policy_fields_on_the_row_the_listener_made() -> None:
    project = ProjectFactory(loop_policy__retrain_every=0, loop_policy__model_kind="flat")
    policy = LoopPolicy.objects.get(project=project)
    assert (policy.retrain_every, policy.model_kind, policy.relabel_budget) == (0, "flat", 50)


def test_a_fixture_with_its_policy_loads_with_that_policy() -> None:
    project = ProjectFactory(loop_policy__relabel_budget=9)
    data = serializers.serialize("json", [project, project.loop_policy])
    LoopPolicy.objects.all().delete()
    Project.objects.all().delete()
    for obj in serializers.deserialize("json", data):
        obj.save()  # raw saves, as loaddata does: the listener runs with created=True
    assert LoopPolicy.objects.get(project_id=project.pk).relabel_budget == 9


def test_a_policy_outside_its_range_is_refused_by_the_database() -> None:
    from django.db import IntegrityError, transaction

    policy = ProjectFactory().loop_policy
    policy.acquisition_relabel_share = 1.5
    with pytest.raises(IntegrityError), transaction.atomic():
        policy.save()


def test_the_project_admin_edits_the_policy_inline_and_lists_without_n_plus_one(
    fast_passwords: None, admin_client: Client
) -> None:
    project = ProjectFactory()
    url = reverse("admin:annotation_project_change", args=[project.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and b'name="loop_policy-0-model_kind"' in page.content

    def listed() -> int:
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get(reverse("admin:annotation_project_changelist"))
        assert page.status_code == 200 and b"Relabel or label new" in page.content
        return len(queries)

    one = listed()
    for _ in range(3):
        ProjectFactory()
    assert listed() == one

    form: dict[str, Any] = {
        "name": project.name,
        "slug": project.slug,
        "description": "",
        "taxonomy_version": project.taxonomy_version_id,
        "overlap": 1,
        "blind": "on",
        "lease_seconds": 900,
        "target_sample_rate": 22050,
        "long_audio": "reject",
        "segment_seconds": 30.0,
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
        "memberships-TOTAL_FORMS": 0,
        "memberships-INITIAL_FORMS": 0,
        "loop_policy-TOTAL_FORMS": 1,
        "loop_policy-INITIAL_FORMS": 1,
        "loop_policy-0-project": project.pk,
        "loop_policy-0-relabel_budget": 5,
        "loop_policy-0-retrain_every": 0,
        "loop_policy-0-acquisition_strategy": "badge",
        "loop_policy-0-acquisition_batch_size": 8,
        "loop_policy-0-acquisition_relabel_share": 0.1,
        "loop_policy-0-embedding_backend": "structure-stats",
        "loop_policy-0-model_kind": "cnn",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    policy = LoopPolicy.objects.get(project=project)
    assert (policy.acquisition_strategy, policy.model_kind, policy.relabel_budget) == (
        "badge",
        "cnn",
        5,
    )
