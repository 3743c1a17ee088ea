"""What StoredFile needs from the default storage beyond Django's Storage API.

Presigned POSTs and GETs, HEAD and bucket creation exist only on S3 (django-storages'
S3Storage, MinIO in docker-compose); local file-system storage answers with its
equivalents or says it cannot.
"""

import contextlib
import functools
import io
import os
import sys
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.files.storage import Storage
from django.utils.http import content_disposition_header

# boto3, botocore and django-storages' S3 backend are imported only where S3 is in use
# (apps/files/s3.py, and the functions below once they are handed an S3 storage): about
# 26 MB per process that a web or worker process without files never needs.

READ_CHUNK_BYTES = 1024 * 1024


def storage_unavailable(exc: BaseException) -> bool:
    """Whether boto3 raised this because the object store cannot be reached (the API answers 503)."""
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    return botocore_exceptions is not None and isinstance(
        exc, botocore_exceptions.ConnectionError | botocore_exceptions.HTTPClientError
    )


def _client_error():
    import botocore.exceptions

    return botocore.exceptions.ClientError


@dataclass(frozen=True)
class ObjectStat:
    size: int
    content_type: str | None  # None where the storage keeps no content type (local files)


def is_s3(storage: Storage) -> bool:
    """Whether the storage is django-storages' S3Storage, decided by its configured backend.

    `default_storage` and FileFields' default storage are lazy: their backend class (and so
    boto3) is imported only when first used. Reading `__class__` sets such a storage up from
    STORAGES, so the answer never depends on whether something imported S3 before; a process
    configured for local files still never imports boto3.
    """
    storage_class = storage.__class__  # on a LazyObject this builds the configured backend
    # An S3Storage can only exist once its module was imported: no import here for the others.
    s3 = sys.modules.get("storages.backends.s3")
    return s3 is not None and issubclass(storage_class, s3.S3Storage)


@functools.lru_cache(maxsize=8)
def _public_client(endpoint_url, access_key, secret_key, region_name, addressing_style, signature_version):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        region_name=region_name,
        config=Config(s3={"addressing_style": addressing_style}, signature_version=signature_version),
    )


def _signing_client(storage):
    """The client that signs URLs handed to API clients.

    They may reach the store under another name than TaskFlow does (MinIO is `minio:9000`
    inside docker-compose but `localhost:9000` outside); signatures cover the host, so
    URLs for them are signed for FILES_S3_PUBLIC_ENDPOINT_URL when it is set.
    """
    if not settings.FILES_S3_PUBLIC_ENDPOINT_URL:
        return storage.connection.meta.client
    return _public_client(
        settings.FILES_S3_PUBLIC_ENDPOINT_URL,
        storage.access_key,
        storage.secret_key,
        storage.region_name,
        storage.addressing_style or "auto",
        storage.signature_version or "s3v4",
    )


def presigned_post(storage, *, key: str, content_type: str, size: int, expires_in: int) -> dict:
    """A browser-style POST upload whose policy admits exactly this key, type and size."""
    post = _signing_client(storage).generate_presigned_post(
        Bucket=storage.bucket_name,
        Key=key,  # boto3 adds the exact {"key": key} and {"bucket": ...} conditions itself
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size]],
        ExpiresIn=expires_in,
    )
    return {"url": post["url"], "fields": post["fields"]}


def presigned_download_url(storage, *, key: str, filename: str, content_type: str) -> str:
    """A short-lived GET that makes browsers save the object instead of rendering it."""
    return _signing_client(storage).generate_presigned_url(
        "get_object",
        Params={
            "Bucket": storage.bucket_name,
            "Key": key,
            "ResponseContentDisposition": content_disposition_header(as_attachment=True, filename=filename),
            "ResponseContentType": content_type,
        },
        ExpiresIn=storage.querystring_expire,
    )


def stat_object(storage: Storage, key: str) -> ObjectStat | None:
    """Size and content type of the stored object, or None when there is none."""
    if is_s3(storage):
        try:
            head = storage.connection.meta.client.head_object(Bucket=storage.bucket_name, Key=key)
        except _client_error() as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return None
            raise
        return ObjectStat(size=head["ContentLength"], content_type=head.get("ContentType"))
    if not storage.exists(key):
        return None
    return ObjectStat(size=storage.size(key), content_type=None)


def open_object(storage: Storage, key: str) -> BinaryIO:
    """A readable binary stream; on S3 the response body itself, so nothing is spooled."""
    if not is_s3(storage):
        return storage.open(key, "rb")
    try:
        response = storage.connection.meta.client.get_object(Bucket=storage.bucket_name, Key=key)
    except _client_error() as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            raise FileNotFoundError(f"No object {key!r} in bucket {storage.bucket_name!r}") from None
        raise
    return io.BufferedReader(response["Body"], buffer_size=READ_CHUNK_BYTES)


def delete_object(storage: Storage, key: str) -> None:
    """Delete the object (a missing one is not an error) and, locally, its emptied folder."""
    storage.delete(key)
    if not is_s3(storage) and hasattr(storage, "path"):
        # Keys are <owner>/<file id>/<name>: the per-file folder would stay behind, empty.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(storage.path(key)))


def ensure_bucket(storage: Storage) -> bool | None:
    """Create the storage's bucket if missing: True if created, False if present, None if not S3."""
    if not is_s3(storage):
        return None
    client = storage.connection.meta.client
    try:
        client.head_bucket(Bucket=storage.bucket_name)
        return False
    except _client_error() as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
            raise
    options = {}
    if storage.region_name and storage.region_name != "us-east-1":
        options["CreateBucketConfiguration"] = {"LocationConstraint": storage.region_name}
    client.create_bucket(Bucket=storage.bucket_name, **options)
    return True
