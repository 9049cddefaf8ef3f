"""Feature extraction services on the test database with generated audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from active_learning.models import FeatureSet, JobStatus
from active_learning.selectors import feature_matrix, feature_set_arrays
from active_learning.services.features import (
    feature_set_create,
    feature_set_extract_chunk,
    feature_set_extract_sync,
    feature_set_finalize,
    feature_set_pending_chunks,
    feature_set_plan,
)
from tests.factories import ClipFactory, ProjectFactory, write_tone

pytestmark = pytest.mark.django_db


@pytest.fixture
def artifacts(settings: object, tmp_path: Path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"  # type: ignore[attr-defined]
    return tmp_path / "artifacts"


def _project_with_audio(tmp_path: Path, n: int = 5, *, corrupt: bool = True):  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    clips = [
        ClipFactory(
            project=project,
            storage_key=str(write_tone(tmp_path / f"a{i}.wav", freq=200 + 50 * i, seconds=0.5)),
        )
        for i in range(n)
    ]
    if corrupt:
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF....not a wave file at all")
        clips.append(ClipFactory(project=project, storage_key=str(bad)))
    return project, clips


def test_extraction_end_to_end_lists_a_corrupt_clip_and_goes_on(
    artifacts: Path, tmp_path: Path
) -> None:
    project, clips = _project_with_audio(tmp_path)
    fs = feature_set_extract_sync(project=project)

    assert fs.status == JobStatus.DONE
    assert (fs.backend, fs.backend_version, fs.dim) == ("logmel-stats", "1", 415)
    assert (fs.n_clips, fs.n_done, fs.n_failed, fs.n_left) == (6, 5, 1, 0)
    assert fs.failures[0]["clip"] == clips[-1].id
    assert "cannot decode" in fs.failures[0]["reason"]
    clip_ids, X = feature_matrix(project=project)  # type: ignore[misc]
    assert clip_ids.tolist() == [c.id for c in clips[:-1]]
    assert X.shape == (5, 415) and X.dtype == np.float32
    assert isinstance(X, np.memmap)
    assert np.all(np.isfinite(X))
    # A second request for the same clips reuses the finished set.
    assert feature_set_extract_sync(project=project).id == fs.id


def test_extraction_resumes_and_skips_chunks_already_written(
    artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = _project_with_audio(tmp_path, n=5, corrupt=False)
    fs = feature_set_create(project=project, chunk_size=2)
    plan = feature_set_plan(feature_set=fs)
    assert [len(c) for c in plan] == [2, 2, 1]
    first = feature_set_extract_chunk(feature_set=fs, chunk_index=0, clip_ids=plan[0])
    assert (first.n_done, first.skipped) == (2, False)
    fs.refresh_from_db()
    assert (fs.n_done, fs.n_left) == (2, 3)
    assert [c for c, _ in feature_set_pending_chunks(feature_set=fs)] == [1, 2]

    # The boundary we patch: decoding. A written chunk must not decode anything again.
    import active_learning.services.features as svc

    decoded: list[str] = []
    real = svc.decode_audio
    monkeypatch.setattr(
        svc, "decode_audio", lambda p, **kw: decoded.append(str(p)) or real(p, **kw)
    )
    again = feature_set_extract_chunk(feature_set=fs, chunk_index=0, clip_ids=plan[0])
    assert again.skipped and decoded == []

    resumed = feature_set_extract_sync(project=project)
    assert resumed.id == fs.id  # the unfinished set is resumed, not replanned
    assert len(decoded) == 3  # only the two missing chunks' clips
    assert (resumed.status, resumed.n_done, resumed.n_failed) == (JobStatus.DONE, 5, 0)
    assert FeatureSet.objects.filter(project=project).count() == 1


def test_finalize_waits_for_missing_chunks(artifacts: Path, tmp_path: Path) -> None:
    project, _ = _project_with_audio(tmp_path, n=3, corrupt=False)
    fs = feature_set_create(project=project, chunk_size=2)
    feature_set_extract_chunk(
        feature_set=fs, chunk_index=0, clip_ids=feature_set_plan(feature_set=fs)[0]
    )
    fs = feature_set_finalize(feature_set=fs)
    assert fs.status != JobStatus.DONE and "not written yet" in fs.error


def test_a_project_without_ready_clips_fails_with_a_reason(artifacts: Path) -> None:
    fs = feature_set_extract_sync(project=ProjectFactory())
    assert fs.status == JobStatus.FAILED and fs.error == "the project has no ready clips"


def test_a_combined_backend_extracts_one_feature_set(artifacts: Path, tmp_path: Path) -> None:
    from active_learning.services.features import FeatureBackendError, backend_resolve

    project, _ = _project_with_audio(tmp_path, n=3, corrupt=False)
    project.loop_policy.embedding_backend = "logmel-stats+structure-stats"
    project.loop_policy.save()
    fs = feature_set_extract_sync(project=project)
    assert fs.status == JobStatus.DONE and fs.backend == "logmel-stats+structure-stats"
    got = feature_matrix(project=project)
    assert got is not None
    X = got[1]
    assert X.shape == (3, fs.dim) and np.isfinite(X).all()
    with pytest.raises(FeatureBackendError, match="model file stands alone"):
        backend_resolve("logmel-stats+model.pt")
    with pytest.raises(FeatureBackendError, match="model file stands alone"):
        backend_resolve("logmel-stats+torch-export")
    # A model file names its backend by format; the path is made absolute for the workers.
    name, opts = backend_resolve("models/tagger.pt2")
    assert name == "torch-export" and Path(opts["path"]).is_absolute()
    assert backend_resolve("models/tagger.pth")[0] == "torchscript"
    with pytest.raises(FeatureBackendError, match="nope"):
        feature_set_extract_sync(project=project, backend="logmel-stats+nope")


def test_new_clips_get_a_new_set_that_copies_rows_already_embedded(
    artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import active_learning.services.features as features

    project, clips = _project_with_audio(tmp_path, n=4, corrupt=True)
    first = feature_set_extract_sync(project=project)
    assert first.status == JobStatus.DONE and first.n_done == 4
    assert feature_set_extract_sync(project=project).pk == first.pk  # up to date: nothing to do

    new = [
        ClipFactory(
            project=project,
            storage_key=str(write_tone(tmp_path / f"new{i}.wav", freq=900 + 40 * i, seconds=0.5)),
        )
        for i in range(2)
    ]
    decoded: list[int] = []
    real = features._clip_audio
    monkeypatch.setattr(features, "_clip_audio", lambda c: decoded.append(c.id) or real(c))
    second = feature_set_extract_sync(project=project)

    assert second.pk != first.pk and second.status == JobStatus.DONE
    assert (second.n_clips, second.n_done, second.n_failed) == (7, 6, 1)
    # Only the new clips and the one that failed before were decoded again.
    assert sorted(decoded) == sorted([c.id for c in new] + [clips[-1].id])
    old_ids, old_X = feature_set_arrays(feature_set=first)
    ids, X = feature_matrix(project=project)  # type: ignore[misc]
    assert ids.tolist() == sorted([c.id for c in clips[:-1]] + [c.id for c in new])
    rows = {c: i for i, c in enumerate(ids.tolist())}
    np.testing.assert_array_equal(X[[rows[c] for c in old_ids.tolist()]], old_X)


def test_the_project_backend_wins_over_a_newer_set_of_another(
    artifacts: Path, tmp_path: Path
) -> None:
    from active_learning.selectors import embedding_feature_set

    project, _ = _project_with_audio(tmp_path, n=3, corrupt=False)
    logmel = feature_set_extract_sync(project=project)
    other = feature_set_extract_sync(project=project, backend="structure-stats")
    assert other.status == JobStatus.DONE and other.pk > logmel.pk
    assert embedding_feature_set(project=project).pk == logmel.pk  # the setting, not the newest
    project.loop_policy.embedding_backend = "structure-stats"
    project.loop_policy.save()
    assert embedding_feature_set(project=project).pk == other.pk
    project.loop_policy.embedding_backend = "musicnn-mtt"  # not extracted yet: the newest set
    project.loop_policy.save()
    assert embedding_feature_set(project=project).pk == other.pk
