"""Label Studio ML backend tests: a link row, a trained model's artifacts written as training
writes them, and (for the ``labelstudio`` ones) a real Label Studio named by ``LABEL_STUDIO_URL``
and ``LABEL_STUDIO_TOKEN`` (``scripts/labelstudio_service.sh``)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from active_learning.artifacts import artifact_write
from active_learning.models import JobStatus, ModelVersion
from annotation.models import LabelStudioLink, Project
from annotation.selectors import taxonomy_index_cached
from taxonomy.hierarchy import Hierarchy

PATHS = ("Rock/Punk", "Rock/Metal", "Jazz/Bebop", "Jazz/Free Jazz", "Electronic/House")


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too until pyproject.toml lists it (the suite runs with --strict-markers).
    config.addinivalue_line(
        "markers", "labelstudio: talks to a real Label Studio at $LABEL_STUDIO_URL"
    )


@pytest.fixture
def ls_server() -> tuple[str, str]:
    url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_TOKEN")
    if not url or not token:
        pytest.skip("set LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN (scripts/labelstudio_service.sh)")
    return url, token


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ModelMaker = Callable[..., ModelVersion]


@pytest.fixture
def make_model() -> ModelMaker:
    """``make_model(project, {clip_id: "Jazz/Bebop", ...}, number=1)``: a done ModelVersion whose
    artifacts put ``hi`` on each named clip's path (``lo`` elsewhere, ``sure`` overrides ``hi``
    per clip), as training writes them."""

    def make(
        project: Project,
        paths: Mapping[int, str],
        *,
        number: int = 1,
        hi: float = 0.9,
        lo: float = 0.05,
        sure: Mapping[int, float] | None = None,
    ) -> ModelVersion:
        index = taxonomy_index_cached(project.taxonomy_version)
        clip_ids = np.array(sorted(paths), dtype=np.int64)
        probs = np.full((clip_ids.size, len(index.nodes)), lo)
        for row, clip_id in enumerate(clip_ids):
            node = index.by_key[paths[int(clip_id)]]
            p = (sure or {}).get(int(clip_id), hi)
            for nid in (node.id, *index.ancestors[node.id]):
                probs[row, index.by_id[nid].index] = p
        probs = Hierarchy(index.parents_array).make_consistent(probs)
        # In the artifacts storage (tests/conftest.py points it at the session's temp folder).
        key = f"project_{project.pk}/model_{number}"
        for name, array in (
            ("clip_ids", clip_ids),
            ("pred_probs", probs.astype(np.float32)),
            ("out_of_sample", np.zeros(clip_ids.size, dtype=bool)),
        ):
            buf = io.BytesIO()
            np.save(buf, array)
            artifact_write(f"{key}/{name}.npy", buf.getvalue())
        return ModelVersion.objects.create(
            project=project,
            number=number,
            taxonomy_version=project.taxonomy_version,
            status=JobStatus.DONE,
            artifact_key=key,
        )

    return make


def make_link(project: Project, **kw: object) -> LabelStudioLink:
    fields: dict[str, object] = {
        "base_url": "http://ls.example:8080",
        "ls_project_id": 7,
        "api_key": "token",
        "webhook_secret": "s3cret",
        "refrain_url": "http://refrain.example",
        "taxonomy_version": project.taxonomy_version,
        **kw,
    }
    return LabelStudioLink.objects.create(project=project, **fields)
