"""Readiness checks: each returns None when healthy or raises with a short reason."""

import uuid

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
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


def check_storage() -> None:
    """Write, read back and delete a small object: reachability and credentials both."""
    name = default_storage.save(f"healthcheck/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as fh:
            if fh.read() != b"ok":
                raise RuntimeError("storage returned different bytes")
    finally:
        default_storage.delete(name)


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
