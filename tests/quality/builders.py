"""Builders for the quality tests: a labelled project with planted errors and a synthetic model."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from active_learning.artifacts import StorageBlobs, artifact_write
from active_learning.core.features import FeatureStore
from active_learning.models import FeatureSet, JobStatus, ModelVersion
from annotation.models import Annotation, Clip, Membership, Project
from annotation.selectors import TaxonomyIndex, taxonomy_index_cached
from annotation.services.annotations import annotation_create
from taxonomy.hierarchy import Hierarchy
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory

LEAVES = (
    "Rock/Punk",
    "Rock/Metal",
    "Rock/Indie",
    "Electronic/House",
    "Electronic/Techno",
    "Jazz/Bebop",
    "Jazz/Free Jazz",
)
#: Planted sibling swaps: clip position -> the wrong leaf given.
PLANTED = {0: "Rock/Metal", 5: "Jazz/Free Jazz", 10: "Electronic/Techno", 15: "Rock/Indie"}


@dataclass
class World:
    project: Project
    index: TaxonomyIndex
    clips: list[Clip]
    truth: list[str]
    users: dict[str, object]
    annotations: dict[int, Annotation] = field(default_factory=dict)

    def node_ids(self, path: str) -> list[int]:
        return [self.index.lookup(path).id]  # type: ignore[union-attr]

    def closed(self, path: str) -> set[int]:
        return set(self.index.closure(self.node_ids(path)))


def make_world(*, n_clips: int = 28, planted: dict[int, str] | None = None, **project_kw) -> World:
    """A project of ``n_clips`` clips labelled by "ann1", with sibling swaps at ``planted``."""
    planted = PLANTED if planted is None else planted
    project = ProjectFactory(**project_kw)
    users: dict[str, object] = {}
    for name, role in [
        ("admin", Membership.Role.ADMIN),
        ("reviewer", Membership.Role.REVIEWER),
        ("ann1", Membership.Role.ANNOTATOR),
        ("ann2", Membership.Role.ANNOTATOR),
        ("ann3", Membership.Role.ANNOTATOR),
    ]:
        users[name] = MembershipFactory(
            project=project, user=UserFactory(username=f"{name}-{project.slug}"), role=role
        ).user
    index = taxonomy_index_cached(project.taxonomy_version)
    world = World(project, index, [], [], users)
    for i in range(n_clips):
        clip = ClipFactory(project=project)
        truth = LEAVES[i % len(LEAVES)]
        world.clips.append(clip)
        world.truth.append(truth)
        given = planted.get(i, truth)
        world.annotations[clip.pk] = annotate(world, clip, given, user=users["ann1"])
    return world


def annotate(world: World, clip: Clip, path: str, *, user: object) -> Annotation:
    ann, _ = annotation_create(
        clip=clip,
        index=world.index,
        explicit_node_ids=world.node_ids(path),
        source=f"user:{user}",
        user=user,  # type: ignore[arg-type]
    )
    return ann


def truth_probs(world: World, *, hi: float = 0.92, lo: float = 0.04) -> np.ndarray:
    """(N, K) hierarchy-consistent probabilities that put ``hi`` on each clip's true path."""
    hier = Hierarchy(world.index.parents_array)
    k = len(world.index.nodes)
    p = np.full((len(world.clips), k), lo)
    for i, path in enumerate(world.truth):
        for nid in world.closed(path):
            p[i, world.index.by_id[nid].index] = hi
    return hier.make_consistent(p)


def _save_npy(key: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    artifact_write(key, buf.getvalue())


def make_model(world: World, probs: np.ndarray | None = None, *, number: int = 1) -> ModelVersion:
    """A finished ModelVersion whose artifacts (in the artifacts storage, which tests/conftest.py
    points at the session's temp folder) hold ``probs`` (out-of-sample for labelled clips)."""
    probs = truth_probs(world) if probs is None else probs
    key = f"project_{world.project.pk}/model_{number}"
    _save_npy(f"{key}/clip_ids.npy", np.array([c.pk for c in world.clips], dtype=np.int64))
    _save_npy(f"{key}/pred_probs.npy", probs.astype(np.float32))
    labelled = set(
        Annotation.objects.filter(clip__project=world.project).values_list("clip_id", flat=True)
    )
    _save_npy(f"{key}/out_of_sample.npy", np.array([c.pk in labelled for c in world.clips]))
    return ModelVersion.objects.create(
        project=world.project,
        number=number,
        taxonomy_version=world.project.taxonomy_version,
        status=JobStatus.DONE,
        artifact_key=key,
    )


def make_features(world: World, *, dim: int = 6, seed: int = 0) -> FeatureSet:
    """A finished FeatureSet of random embeddings for every clip (in the artifacts storage)."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(StorageBlobs(), prefix=f"project_{world.project.pk}/features")
    fs = FeatureSet.objects.create(
        project=world.project, backend="test", dim=dim, status=JobStatus.DONE
    )
    key = store.write(
        f"fs_{fs.pk}",
        rng.normal(size=(len(world.clips), dim)),
        [str(c.pk) for c in world.clips],
        backend="test",
        version="1",
    )
    fs.store_key = key
    fs.save(update_fields=["store_key"])
    return fs
