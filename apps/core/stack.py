"""What this process runs on, in words fit for a public page: kinds of backends, never their addresses.

The landing page shows it to anyone, so nothing here reads a URL beyond its scheme: hosts,
user names, passwords and bucket names stay out.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.storage import storages
from django.db import connection

DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
BROKERS = {"filesystem": "on-disk folder (kombu filesystem transport)", "redis": "Redis", "rediss": "Redis (TLS)"}


@dataclass(frozen=True)
class StackDescription:
    database: str
    broker: str
    storage: str
    cache: str
    embedded: bool  # nothing outside this machine: SQLite, on-disk broker, local files and cache
    external: bool  # every backend outside the process' machine: PostgreSQL, Redis, S3

    @property
    def mode(self) -> str:
        if self.embedded:
            return "embedded"
        return "real stack" if self.external else "mixed"


def describe_stack() -> StackDescription:
    vendor = connection.vendor  # by vendor, not ENGINE (a wrapper of a backend has another)
    scheme = urlsplit(settings.CELERY_BROKER_URL).scheme
    object_store = hasattr(storages["default"], "bucket_name")
    cache_backend = settings.CACHES["default"]["BACKEND"]
    local_cache = cache_backend.endswith("LocMemCache")
    return StackDescription(
        database=DATABASES.get(vendor, vendor),
        broker=BROKERS.get(scheme, scheme),
        storage="S3-compatible object store" if object_store else "local folder",
        cache="local memory" if local_cache else ("Redis" if "redis" in cache_backend.lower() else "other"),
        embedded=vendor == "sqlite" and scheme == "filesystem" and not object_store and local_cache,
        external=vendor != "sqlite" and scheme.startswith("redis") and object_store and not local_cache,
    )
