"""Readiness checks: each returns None when healthy or raises with a short reason."""

import threading
import time
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from kombu import Connection

TIMEOUT_SECONDS = 2


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    """Redis carries the cache, the broker and the rate limits in the real stack."""
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        conn.ensure_connection(max_retries=0, timeout=TIMEOUT_SECONDS)


@dataclass
class _StorageVerdict:
    storage: object  # the storage instance checked; STORAGES changing makes a new one
    checked_at: float
    error: Exception | None


_storage_verdict: _StorageVerdict | None = None
_storage_lock = threading.Lock()


def check_storage() -> None:
    """The object store answers for our bucket, checked at most every READYZ_STORAGE_CHECK_SECONDS.

    Probes hit /readyz every few seconds from every replica; a round trip to the store on
    each would be load (and, as a write, cost) for nothing. The verdict, good or bad, is
    kept per process for the interval, so a failing store is not hammered either.
    """
    global _storage_verdict
    storage = storages["default"]
    interval = settings.READYZ_STORAGE_CHECK_SECONDS
    with _storage_lock:
        verdict = _storage_verdict
        fresh = verdict is not None and verdict.storage is storage and time.monotonic() - verdict.checked_at < interval
        if not fresh:
            try:
                _probe_storage(storage)
                error = None
            except Exception as exc:  # any failure is a "not ready"; run_checks reports it
                error = exc
            verdict = _storage_verdict = _StorageVerdict(storage, time.monotonic(), error)
    if verdict.error is not None:
        raise verdict.error


def _probe_storage(storage) -> None:
    if hasattr(storage, "bucket_name"):
        # S3: a HEAD of the bucket is a read that proves reachability, credentials and the
        # bucket; no object is written (writes cost, and are versioned or logged on some stores).
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
        return
    # Local files: write, read back and delete a small file (a full or read-only disk shows).
    name = storage.save(f"healthcheck/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with storage.open(name) as fh:
            if fh.read() != b"ok":
                raise RuntimeError("storage returned different bytes")
    finally:
        storage.delete(name)


def readiness_checks() -> dict:
    checks = {"database": check_database, "storage": check_storage}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    else:
        checks["broker"] = check_broker
    return checks


def run_checks() -> tuple[bool, dict[str, str]]:
    results = {}
    healthy = True
    for name, check in readiness_checks().items():
        try:
            check()
        except Exception as exc:  # any failure of a dependency is a "not ready"
            healthy = False
            results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
        else:
            results[name] = "ok"
    return healthy, results
