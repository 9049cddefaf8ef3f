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


def make_console_project(*, n_clips: int = 84, seed: int = 0, **project_kw) -> World:
    """A demo-like project for the console's pages: ``n_clips`` clips labelled by ann1 over five
    days (one in twelve given a sibling), about a third relabelled by ann2 and ann3 (who
    sometimes disagree), three model versions that improve, three quality runs whose routed
    issues people confirmed, rejected or tied, two cycles with their acquisition strategy, and an
    open queue. Times spent and dates are drawn from ``seed``."""
    from datetime import timedelta

    from django.utils import timezone

    from active_learning.services.training import per_node_metrics
    from annotation.models import Task
    from annotation.services.enqueue import Manual, task_enqueue
    from quality.models import LabelIssue, QualityCycle, QualityRun
    from quality.selectors import dense_labels
    from quality.services.consensus import consensus_recompute_project

    rng = np.random.default_rng(seed)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    planted = {i: LEAVES[(i + 1) % len(LEAVES)] for i in range(0, n_clips, 12)}
    world = make_world(n_clips=n_clips, planted=planted, **project_kw)
    for k, clip in enumerate(world.clips):
        Annotation.objects.filter(clip=clip).update(
            created_at=now - timedelta(days=5 - (5 * k) // n_clips, hours=int(rng.integers(0, 6))),
            time_spent_ms=int(rng.normal(12_000, 3_000)),
        )
    for name, share, accuracy in (("ann2", 0.4, 0.85), ("ann3", 0.25, 0.7)):
        user = world.users[name]
        for i in np.flatnonzero(rng.random(n_clips) < share):
            truth = world.truth[i]
            sibs = [leaf for leaf in LEAVES if leaf.split("/")[0] == truth.split("/")[0]]
            given = truth if rng.random() < accuracy else str(rng.choice(sibs))
            annotate(world, world.clips[i], given, user=user)
        for ann_id in Annotation.objects.filter(user=user).values_list("pk", flat=True):
            Annotation.objects.filter(pk=ann_id).update(
                created_at=now
                - timedelta(days=int(rng.integers(0, 3)), hours=int(rng.integers(1, 9))),
                time_spent_ms=int(rng.normal(20_000 if name == "ann2" else 9_000, 2_000)),
            )
    hier = Hierarchy(world.index.parents_array)
    y = dense_labels([sorted(world.closed(t)) for t in world.truth], world.index)
    mv = None
    for number, (noise, days) in enumerate(((0.35, 4), (0.2, 2), (0.1, 0)), start=1):
        probs = truth_probs(world, hi=0.92 - noise, lo=0.04 + noise / 3)
        mv = make_model(world, probs, number=number)
        # The per-node report: every Rock/Metal clip ranked Rock/Punk (near chance).
        report = probs.copy()
        punk, metal = world.index.lookup("Rock/Punk").index, world.index.lookup("Rock/Metal").index  # type: ignore[union-attr]
        for i, path in enumerate(world.truth):
            if path == "Rock/Metal":
                report[i, metal], report[i, punk] = report[i, punk] / 3, report[i, metal]
        ModelVersion.objects.filter(pk=mv.pk).update(
            created_at=now - timedelta(days=days, hours=-1),
            kind="hierarchical",
            n_labelled=n_clips,
            metrics={
                "hier_f1": round(0.55 + 0.12 * number, 3),
                "leaf_accuracy": round(0.45 + 0.13 * number, 3),
                "top_level_accuracy": round(0.7 + 0.08 * number, 3),
                "mAP": round(0.5 + 0.1 * number, 3),
                "per_depth_macro_f1": {"0": 0.7 + 0.08 * number, "1": 0.4 + 0.12 * number},
                "per_node": per_node_metrics(y, report, hier),
            },
        )
    for days, strategy in ((3, "diversity"), (1, "uncertainty")):
        QualityCycle.objects.create(
            project=world.project,
            status="done",
            steps_done=list(QualityCycle.STEPS),
            results={"acquire": {"strategy": strategy, "created_label": 6}},
            created_at=now - timedelta(days=days, hours=2),
            started_at=now - timedelta(days=days, hours=2),
            finished_at=now - timedelta(days=days, hours=1),
        )
    consensus_recompute_project(project=world.project, model_version=mv)
    types = ("wrong_sibling", "wrong_sibling", "wrong_branch", "missing_genre", "extra_genre")
    outcomes = (
        LabelIssue.Status.CONFIRMED,
        LabelIssue.Status.CONFIRMED,
        LabelIssue.Status.REJECTED,
        LabelIssue.Status.IN_REVIEW,
        LabelIssue.Status.ROUTED,
    )
    order = rng.permutation(n_clips)
    pos = 0
    for days in (4, 2, 0):
        run = QualityRun.objects.create(
            project=world.project, status="done", created_at=now - timedelta(days=days)
        )
        n = int(rng.integers(6, 12))
        for rank in range(1, n + 1):
            i = int(order[pos % n_clips])
            pos += 1
            kind = str(rng.choice(types))
            node = world.index.lookup(world.truth[i] if kind != "wrong_branch" else "Rock")
            routed = rank <= 5
            status = (
                (outcomes[rank - 1] if days else LabelIssue.Status.ROUTED)
                if routed
                else LabelIssue.Status.SUPERSEDED
            )
            LabelIssue.objects.create(
                run=run,
                project=world.project,
                clip=world.clips[i],
                score=float(rng.uniform(0.02, 0.4)),
                rank=rank,
                issue_type=kind,
                node=node,
                depth=node.depth if node else None,
                status=status,
                routed_at=now - timedelta(days=days) if routed else None,
            )
    unlabelled = [ClipFactory(project=world.project) for _ in range(6)]
    task_enqueue(
        project=world.project,
        sources=[
            *Manual.for_clips([c.pk for c in unlabelled], overlap=2),
            *(
                Manual(clip_id=world.clips[i].pk, kind=Task.Kind.RELABEL, reason="label_issue:x")
                for i in range(3)
            ),
        ],
    )
    return world
