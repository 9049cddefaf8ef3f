"""factory_boy factories and small builders shared by the Django-layer tests."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import factory
import numpy as np
import soundfile as sf
from django.contrib.auth import get_user_model

from annotation.models import Clip, Membership, Project, Taxonomy, TaxonomyNode, TaxonomyVersion

DEFAULT_PATHS = (
    "Rock/Punk",
    "Rock/Metal",
    "Rock/Indie",
    "Electronic/House",
    "Electronic/Techno",
    "Jazz/Bebop",
    "Jazz/Free Jazz",
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("refrain-pass-123")


_taxonomy_counter = itertools.count()


def make_taxonomy_version(
    paths: Sequence[str] = DEFAULT_PATHS, *, name: str | None = None, number: int = 1
) -> TaxonomyVersion:
    """A version whose nodes are the given paths and their ancestors (keys are the paths)."""
    name = name or f"Test genres {next(_taxonomy_counter)}"
    taxonomy, _ = Taxonomy.objects.get_or_create(name=name)
    version = TaxonomyVersion.objects.create(
        taxonomy=taxonomy, number=number, source_format="paths", content_sha256="0" * 64
    )
    ordered: list[str] = []
    for path in paths:
        parts = path.split("/")
        for d in range(1, len(parts) + 1):
            prefix = "/".join(parts[:d])
            if prefix not in ordered:
                ordered.append(prefix)
    nodes: dict[str, TaxonomyNode] = {}
    parents = {p.rsplit("/", 1)[0] for p in ordered if "/" in p}
    for i, path in enumerate(ordered):
        parent = nodes.get(path.rsplit("/", 1)[0]) if "/" in path else None
        nodes[path] = TaxonomyNode.objects.create(
            version=version,
            key=path,
            name=path.rsplit("/", 1)[-1],
            path=path,
            depth=path.count("/"),
            index=i,
            parent=parent,
            is_leaf=path not in parents,
        )
    version.n_nodes = len(ordered)
    version.max_depth = max(p.count("/") for p in ordered)
    version.save()
    return version


class ProjectFactory(factory.django.DjangoModelFactory):
    """A project; ``loop_policy__<field>=value`` sets fields of its loop policy (the row itself
    comes from active_learning's listener, as for every new project)."""

    class Meta:
        model = Project
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    taxonomy_version = factory.LazyFunction(make_taxonomy_version)

    @factory.post_generation
    def loop_policy(project: Project, create: bool, extracted: object, **fields: Any) -> None:
        if not (create and fields):
            return
        policy = project.loop_policy
        for name, value in fields.items():
            setattr(policy, name, value)
        policy.save(update_fields=list(fields))


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.ANNOTATOR


def write_tone(path: Path, *, freq: float = 440.0, seconds: float = 1.0, sr: int = 22050) -> Path:
    """A short sine tone, written in the format the suffix names."""
    t = np.arange(int(seconds * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr)
    return path


class ClipFactory(factory.django.DjangoModelFactory):
    """A ready clip row of a local file. Pass ``storage_key`` (the absolute path of a real file)
    where the audio itself matters; ``source_path`` is accepted as its older name."""

    class Meta:
        model = Clip

    class Params:
        source_path = None

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"clip-{n}")
    storage = Clip.Storage.LOCAL
    storage_key = factory.LazyAttribute(
        lambda c: c.source_path or f"/nonexistent/{c.external_id}.wav"
    )
    original_name = factory.LazyAttribute(lambda c: f"{c.external_id}.wav")
    sha256 = factory.LazyAttribute(lambda c: hashlib.sha256(c.external_id.encode()).hexdigest())
    format = "wav"
    duration_s = 1.0
    sample_rate = 22050
    channels = 1
    status = Clip.Status.READY
