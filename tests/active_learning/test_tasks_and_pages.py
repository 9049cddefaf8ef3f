"""Task-level idempotency, the models page."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from active_learning.models import JobStatus, ModelVersion
from active_learning.services.training import model_train_for_project
from active_learning.tasks import extract_features_chunk, train_project_model
from annotation.models import Membership
from tests.active_learning.conftest import project_with_features
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

FAST = {"max_steps": 200, "min_steps": 100}


def test_duplicate_task_delivery_does_nothing_twice(artifacts: Path) -> None:
    project, _, _ = project_with_features(artifacts, n_per_leaf=1)
    # Too few labels: quick, and still a full claim -> run -> fail path.
    first = train_project_model.apply(args=[project.id], task_id="same-message").get()
    second = train_project_model.apply(args=[project.id], task_id="same-message").get()
    assert first["status"] == JobStatus.FAILED and "skipped" not in first
    assert second["skipped"] is True and second["model_version"] == first["model_version"]
    assert ModelVersion.objects.filter(project=project).count() == 1


def test_chunk_task_on_a_finished_set_is_skipped(artifacts: Path) -> None:
    from active_learning.models import FeatureSet

    project, _, _ = project_with_features(artifacts, n_per_leaf=1)
    fs = FeatureSet.objects.get(project=project)
    assert extract_features_chunk.apply(args=[fs.id, 0, [1, 2]]).get()["skipped"] is True


def test_models_page_lists_versions_with_metrics(artifacts: Path, fast_passwords: None) -> None:
    project, _, _ = project_with_features(artifacts)
    model_train_for_project(project=project, n_folds=3, hyperparameters=FAST)
    model_train_for_project(project=project, n_folds=3, hyperparameters=FAST)
    user = UserFactory()
    MembershipFactory(project=project, user=user, role=Membership.Role.REVIEWER)
    client = Client()
    client.force_login(user)
    page = client.get(f"/p/{project.slug}/models/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "v2" in html and "v1" in html and "plotly-graph-div" in html
    assert "depth 0" in html
    # The newest version's per-node table: every labelled genre, none near chance here.
    assert "What model v2 tells apart" in html and "Picked over siblings" in html
    assert "near chance" not in html.split('id="per-node"')[1].split("<tbody>")[1]
    outsider = Client()
    outsider.force_login(UserFactory())
    assert outsider.get(f"/p/{project.slug}/models/").status_code in (403, 404)


def test_models_page_flags_genres_the_model_barely_tells_apart(
    tmp_path: Path, fast_passwords: None
) -> None:
    from active_learning.services.training import per_node_metrics
    from quality.selectors import dense_labels
    from taxonomy.hierarchy import Hierarchy
    from tests.quality.builders import make_model, make_world, truth_probs

    world = make_world(planted={})
    hier = Hierarchy(world.index.parents_array)
    probs = truth_probs(world)
    punk = world.index.lookup("Rock/Punk").index  # type: ignore[union-attr]
    metal = world.index.lookup("Rock/Metal").index  # type: ignore[union-attr]
    for i, path in enumerate(world.truth):
        if path == "Rock/Punk":  # every Punk clip ranked Metal
            probs[i, punk], probs[i, metal] = 0.04, 0.92
    y = dense_labels([sorted(world.closed(t)) for t in world.truth], world.index)
    mv = make_model(world, probs)
    mv.metrics = {"hier_f1": 0.9, "per_node": per_node_metrics(y, probs, hier)}
    mv.save()
    client = Client()
    client.force_login(world.users["reviewer"])
    html = client.get(f"/p/{world.project.slug}/models/").content.decode()
    table = html.split('id="per-node"')[1].split("<tbody>")[1]
    punk_row = next(r for r in table.split("<tr>") if 'title="Rock/Punk"' in r)
    assert "near chance" in punk_row and "Metal" in punk_row
    metal_row = next(r for r in table.split("<tr>") if 'title="Rock/Metal"' in r)
    assert "near chance" not in metal_row
