"""A feature chunk whose worker dies on every start is given up after REFRAIN_JOB_MAX_ATTEMPTS
(its clips listed as failed), so a requeued message (reject_on_worker_lost) cannot loop forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from active_learning.artifacts import artifact_write
from active_learning.models import JobStatus
from active_learning.services.features import (
    _store_of,
    feature_set_create,
    feature_set_extract_chunk,
    feature_set_finalize,
    feature_set_mark_running,
    feature_set_plan,
)
from tests.factories import ClipFactory, ProjectFactory, write_tone

pytestmark = pytest.mark.django_db


def _starts(fs: Any, chunk: int, n: int) -> None:
    """Pretend the chunk was started ``n`` times by workers that died."""
    store, name = _store_of(fs)
    artifact_write(f"{store.chunk_folder(name)}/{chunk:06d}.attempts", str(n).encode())


def test_a_chunk_that_kills_its_worker_every_time_is_given_up(
    settings: Any, tmp_path: Path
) -> None:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.REFRAIN_JOB_MAX_ATTEMPTS = 3
    project = ProjectFactory()
    clips = [
        ClipFactory(
            project=project,
            storage_key=str(write_tone(tmp_path / f"a{i}.wav", freq=200 + 50 * i, seconds=0.3)),
        )
        for i in range(6)
    ]
    fs = feature_set_create(project=project, chunk_size=2)
    feature_set_mark_running(feature_set=fs)
    plan = feature_set_plan(feature_set=fs)
    _starts(fs, 0, 3)  # three workers died on chunk 0: the fourth start gives up
    _starts(fs, 1, 2)  # two died on chunk 1: the third start still embeds it
    results = [
        feature_set_extract_chunk(feature_set=fs, chunk_index=c, clip_ids=ids)
        for c, ids in enumerate(plan)
    ]
    assert [(r.n_done, r.n_failed) for r in results] == [(0, 2), (2, 0), (2, 0)]
    fs = feature_set_finalize(feature_set=fs)
    assert fs.status == JobStatus.DONE and (fs.n_done, fs.n_failed) == (4, 2)
    assert {f["clip"] for f in fs.failures} == {clips[0].pk, clips[1].pk}
    assert all("lost 3 times" in f["reason"] for f in fs.failures)
