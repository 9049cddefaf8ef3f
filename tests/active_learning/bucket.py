"""A real S3 endpoint for artifact tests: moto's server over HTTP in a thread of the test process
(worker subprocesses reach it too), a fresh bucket per test, and clips whose tones separate leaves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from annotation.selectors import TaxonomyIndex
from refrain.settings import artifact_storage_config
from tests.active_learning.conftest import LEAVES, label
from tests.factories import ClipFactory, ProjectFactory, write_tone
from tests.security.stack import free_port

REGION = "us-east-1"
ADMIN = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
MODEL_FILES = {
    "clip_ids.npy",
    "metrics.json",
    "model.joblib",
    "out_of_sample.npy",
    "pred_probs.npy",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class Bucket:
    endpoint: str
    name: str
    prefix: str
    cache: Path
    local_root: Path

    def client(self, **creds: str) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, **(creds or ADMIN)
        )

    def object_keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.name, Prefix=f"{self.prefix}/")
        return sorted(o["Key"].removeprefix(f"{self.prefix}/") for o in listed.get("Contents", []))


def use_bucket(settings: Any, name: str, prefix: str) -> None:
    # A new STORAGES dict: Django drops its cached storage instances (and their S3 connections).
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": artifact_storage_config(f"s3://{name}/{prefix}"),
    }


@pytest.fixture
def bucket(settings: Any, monkeypatch: Any, tmp_path: Path, moto_endpoint: str) -> Bucket:
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_S3_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(var, value)
    b = Bucket(
        moto_endpoint, f"refrain-{uuid.uuid4().hex[:12]}", "art", tmp_path / "cache", tmp_path / "v"
    )
    b.client().create_bucket(Bucket=b.name)
    use_bucket(settings, b.name, b.prefix)
    # No local artifact folder is used: it must stay absent.
    settings.ARTIFACT_ROOT = b.local_root
    settings.REFRAIN_CACHE_DIR = b.cache
    return b


def tone_project(tmp_path: Path, *, per_leaf: int = 5, unlabelled: int = 4) -> Any:
    """Clips whose tone frequency follows their leaf (log-mel statistics separate them)."""
    project = ProjectFactory()
    index = TaxonomyIndex.for_version(project.taxonomy_version)
    freqs = (220.0, 330.0, 1760.0, 2640.0)
    clips = []
    for i in range(per_leaf * len(LEAVES) + unlabelled):
        leaf = i % len(LEAVES)
        path = write_tone(tmp_path / "audio" / f"c{i}.wav", freq=freqs[leaf] + 7 * i, seconds=0.4)
        clips.append((ClipFactory(project=project, source_path=str(path)), leaf))
    return project, index, clips


def label_leaves(index: TaxonomyIndex, clips: list, per_leaf: int = 5) -> None:
    for clip, leaf in clips[: per_leaf * len(LEAVES)]:
        label(clip, index, LEAVES[leaf])
