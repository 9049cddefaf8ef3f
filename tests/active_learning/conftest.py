"""Builders for the Django-layer active_learning tests: projects with features and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from active_learning.core.features import FeatureStore
from active_learning.models import FeatureSet, JobStatus
from annotation.models import Clip, Project
from annotation.selectors import TaxonomyIndex
from annotation.services.annotations import annotation_create
from tests.factories import ClipFactory, ProjectFactory

LEAVES = ("Rock/Punk", "Rock/Metal", "Jazz/Bebop", "Jazz/Free Jazz")


@pytest.fixture
def artifacts(settings: object, tmp_path: Path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"  # type: ignore[attr-defined]
    return tmp_path / "artifacts"


def label(clip: Clip, index: TaxonomyIndex, path: str) -> None:
    annotation_create(
        clip=clip, index=index, explicit_node_ids=[index.lookup(path).id], source="import:test"
    )


def project_with_features(
    root: Path, *, n_per_leaf: int = 6, n_unlabelled: int = 4, seed: int = 0
) -> tuple[Project, list[Clip], dict[int, str]]:
    """A project whose (synthetic) features separate four leaves; returns (project, clips, truth).

    Features are written straight into a done FeatureSet: training tests need no audio.
    """
    rng = np.random.default_rng(seed)
    project = ProjectFactory()
    index = TaxonomyIndex.for_version(project.taxonomy_version)
    centres = rng.normal(0.0, 3.0, size=(len(LEAVES), 16)).astype(np.float32)
    clips: list[Clip] = []
    truth: dict[int, str] = {}
    rows = []
    for i in range(n_per_leaf * len(LEAVES) + n_unlabelled):
        leaf = i % len(LEAVES)
        clip = ClipFactory(project=project)
        clips.append(clip)
        truth[clip.id] = LEAVES[leaf]
        rows.append(centres[leaf] + rng.normal(0.0, 0.5, size=16).astype(np.float32))
        if i < n_per_leaf * len(LEAVES):
            label(clip, index, LEAVES[leaf])
    fs = FeatureSet.objects.create(
        project=project, backend="synthetic", backend_version="1", dim=16, n_clips=len(clips)
    )
    # ``root`` is the ARTIFACT_ROOT the ``artifacts`` fixture set: rows hold keys relative to it.
    store = FeatureStore(root, prefix=f"project_{project.id}/features")
    store.write(
        f"fs_{fs.id}",
        np.stack(rows),
        [str(c.id) for c in clips],
        backend="synthetic",
        version="1",
    )
    fs.store_key = store.matrix_key(f"fs_{fs.id}")
    fs.status = JobStatus.DONE
    fs.n_done = len(clips)
    fs.save()
    return project, clips, truth


# The S3 bucket fixtures of the artifact tests (a moto server over HTTP).
from tests.active_learning.bucket import bucket, moto_endpoint  # noqa: E402, F401
