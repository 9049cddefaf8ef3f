"""S3-compatible buckets (AWS S3, MinIO): listing, streamed reads and presigned links.

One client configuration for every bucket Refrain touches, from the settings (``AWS_S3_ENDPOINT_URL``,
``AWS_S3_REGION_NAME``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``): the media bucket and the
buckets clips are imported from. botocore's errors become two application errors with a sentence a
person can act on: :class:`BucketUnavailable` (the bucket is missing, access is denied, no
credentials, the endpoint is unreachable) and :class:`ObjectMissing` (one object is gone).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import boto3
from botocore.client import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from django.conf import settings

from refrain.errors import Invalid, NotFound

_READ_CHUNK = 1024 * 1024
_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
}


class BucketUnavailable(Invalid):
    """The bucket cannot be used at all; ``str()`` says why and what to check."""

    code = "bucket_unavailable"


class ObjectMissing(NotFound):
    """One object is not (or no longer) in the bucket."""

    code = "object_missing"


@dataclass(frozen=True)
class BucketLocation:
    """``s3://<bucket>/<prefix>``: a bucket and a key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class BucketObject:
    bucket: str
    key: str
    size: int
    etag: str = ""


def bucket_location_parse(uri: str) -> BucketLocation:
    """``s3://bucket[/prefix]`` → its parts.

    Raises
    ------
    Invalid
        For anything else (another scheme, no bucket name, a name S3 would refuse).
    """
    text = (uri or "").strip()
    if not text.startswith("s3://"):
        raise Invalid(f"{text or '(empty)'}: a bucket is written s3://bucket/prefix")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in ".-_" for c in bucket):
        raise Invalid(f"{text}: {bucket or '(none)'} is not a bucket name")
    return BucketLocation(bucket=bucket, prefix=prefix.strip("/"))


def _client_config() -> tuple[tuple[str, ...], Config]:
    key = (
        settings.REFRAIN_S3_ENDPOINT_URL,
        settings.REFRAIN_S3_REGION,
        settings.REFRAIN_S3_ACCESS_KEY_ID,
        settings.REFRAIN_S3_SECRET_ACCESS_KEY,
        settings.REFRAIN_S3_ADDRESSING_STYLE,
    )
    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": settings.REFRAIN_S3_ADDRESSING_STYLE or "auto"},
    )
    return key, config


@functools.lru_cache(maxsize=4)
def _client_for(key: tuple[str, ...], config: Config) -> Any:
    endpoint, region, access_key, secret_key, _style = key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or None,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        config=config,
    )


def s3_client() -> Any:
    """A boto3 S3 client for the configured endpoint and credentials (one per configuration and
    process: clients are thread-safe, sessions are not)."""
    key, config = _client_config()
    return _client_for(key, config)


def _explain(exc: Exception, *, bucket: str, key: str | None = None) -> Exception:
    """botocore's error as :class:`BucketUnavailable` or :class:`ObjectMissing`."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return BucketUnavailable(
            f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the "
            "web and every worker"
        )
    if isinstance(exc, EndpointConnectionError):
        endpoint = settings.REFRAIN_S3_ENDPOINT_URL or "AWS"
        return BucketUnavailable(f"{where}: cannot reach the S3 endpoint {endpoint}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _MISSING_BUCKET:
            return BucketUnavailable(f"s3://{bucket}: the bucket does not exist")
        if code in _DENIED:
            return BucketUnavailable(
                f"{where}: access denied ({code}); check the credentials and the bucket's policy"
            )
        if key is not None and code in _MISSING_KEY:
            return ObjectMissing(f"{where}: the object is not in the bucket (deleted or moved?)")
        if key is None and code in _MISSING_KEY:
            return BucketUnavailable(f"s3://{bucket}: the bucket does not exist")
        return BucketUnavailable(f"{where}: S3 answered {code}: {error.get('Message', '')}")
    if isinstance(exc, BotoCoreError):
        return BucketUnavailable(f"{where}: {exc}")
    return exc


def bucket_objects(location: BucketLocation) -> Iterator[BucketObject]:
    """Every object under ``location``, in key order, page by page (1000 keys a request).

    Raises
    ------
    BucketUnavailable
        Before the first object when the bucket is missing, denies listing or there are no
        credentials; later if access goes while listing.
    """
    prefix = f"{location.prefix}/" if location.prefix else ""
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield BucketObject(
                    bucket=location.bucket,
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")).strip('"'),
                )
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, bucket=location.bucket) from exc


def object_read_into(*, bucket: str, key: str, out: BinaryIO) -> int:
    """Stream the object into ``out`` (1 MiB at a time, never whole in memory); the bytes written.

    Raises
    ------
    ObjectMissing
        The object is gone.
    BucketUnavailable
        The bucket is gone, access is denied, no credentials.
    """
    try:
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        written = 0
        for block in body.iter_chunks(_READ_CHUNK):
            out.write(block)
            written += len(block)
        return written
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, bucket=bucket, key=key) from exc


def object_put_file(*, bucket: str, key: str, path: str, content_type: str = "") -> None:
    """Upload a local file (multipart above 8 MiB, by boto3's transfer manager)."""
    extra = {"ContentType": content_type} if content_type else None
    try:
        s3_client().upload_file(path, bucket, key, ExtraArgs=extra)
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, bucket=bucket, key=key) from exc
    except boto3.exceptions.S3UploadFailedError as exc:
        raise BucketUnavailable(f"s3://{bucket}/{key}: upload failed: {exc}") from exc


def object_presigned_url(
    *, bucket: str, key: str, content_type: str = "", download_name: str = ""
) -> str:
    """A GET link to the object, valid ``REFRAIN_PRESIGNED_URL_SECONDS``; with ``download_name`` and
    ``content_type`` S3 answers with those headers instead of the stored ones (a neutral name in
    blind mode). Signed locally: no request is made."""
    params: dict[str, str] = {"Bucket": bucket, "Key": key}
    if content_type:
        params["ResponseContentType"] = content_type
    if download_name:
        params["ResponseContentDisposition"] = f'inline; filename="{download_name}"'
    try:
        return str(
            s3_client().generate_presigned_url(
                "get_object",
                Params=params,
                ExpiresIn=int(settings.REFRAIN_PRESIGNED_URL_SECONDS),
            )
        )
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, bucket=bucket, key=key) from exc
