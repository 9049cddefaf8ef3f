"""A real S3-compatible HTTP endpoint for tests: moto's server (``moto[server]``) on a free loopback
port, in a thread of the test process. Workers started by a test reach it over HTTP like any S3.

Nothing is mocked in-process: boto3 and django-storages talk HTTP to it. Each test makes its own
buckets with unique names; :func:`s3_auth_enforced` switches on moto's IAM checks (off by default,
so setting up users and policies needs no credentials) for the access-denied cases.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

KEY_ID, SECRET = "refrain-test", "refrain-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    url: str

    def client(self, service: str = "s3", *, key: str = KEY_ID, secret: str = SECRET) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def bucket(self, stem: str = "b") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def reader_for(self, bucket: str) -> tuple[str, str]:
        """Access keys of a new IAM user who may use ``bucket`` and nothing else."""
        iam = self.client("iam")
        user = f"reader-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:*",
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        iam.put_user_policy(
            UserName=user, PolicyName="one-bucket", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def s3_auth_enforced() -> Iterator[None]:
    """moto checks signatures and IAM policies inside the block (its server runs in this process,
    so its setting is switched here; the S3 protocol seen by the code under test is unchanged)."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(url=f"http://{host}:{port}")
    finally:
        server.stop()


def s3_settings(
    settings: Any, server: S3Server, *, key: str = KEY_ID, secret: str = SECRET
) -> None:
    """Point Refrain's S3 settings at ``server`` (the buckets it imports from and presigns)."""
    from annotation.services import buckets

    settings.REFRAIN_S3_ENDPOINT_URL = server.url
    settings.REFRAIN_S3_REGION = REGION
    settings.REFRAIN_S3_ACCESS_KEY_ID = key
    settings.REFRAIN_S3_SECRET_ACCESS_KEY = secret
    settings.REFRAIN_S3_ADDRESSING_STYLE = "path"
    buckets._client_for.cache_clear()


def media_in_bucket(settings: Any, server: S3Server, bucket: str) -> None:
    """The media storage (served copies, visuals, uploads) in ``bucket``, as REFRAIN_MEDIA_STORAGE=s3
    configures it."""
    s3_settings(settings, server)
    settings.REFRAIN_MEDIA_BUCKET = bucket
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": "media",
                "endpoint_url": server.url,
                "region_name": REGION,
                "access_key": KEY_ID,
                "secret_key": SECRET,
                "addressing_style": "path",
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "file_overwrite": True,
            },
        },
    }
