"""The suite on several pytest-xdist workers (`make test` runs `pytest -n 2`).

Each xdist worker is a test process of its own, and must not share mutable state with the
others on the servers they all use:

- PostgreSQL: pytest-django gives each worker its own test database (`test_<name>_gw0`,
  `..._gw1`); the Celery workers, web servers and beat a test starts use that database
  (the root conftest's `worker_env`).
- Redis: worker gwN uses database (base - N), counting down from the database in REDIS_URL
  (`make test`: 15 for gw0, 14 for gw1, ...). Tests flush their database and Celery queues
  live in it, so two workers on one database would eat each other's messages. The URL is set
  in the worker's environment before it starts pytest (see `point_worker_at_its_redis`), so
  Django's settings, the Celery app and every subprocess read the worker's own database, as
  they would read any REDIS_URL.
- Ports, temporary folders, prometheus multiprocess folders: already per test (the OS picks
  free ports, `tmp_path` is per worker), see tests/support/processes.py.
"""

from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_DATABASES = 16  # Redis' default `databases`


def worker_index(worker_id: str) -> int:
    """0 for gw0, 1 for gw1, ..."""
    return int(worker_id.removeprefix("gw"))


def redis_url_for_worker(url: str, index: int) -> str:
    """REDIS_URL with the database number lowered by the worker's index (gw0 keeps the base).

    Counting down keeps the default (15, the last of Redis' 16 databases) valid for up to 16
    workers; a base too low for the number of workers is an error, not a shared database.
    """
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    database = base - index
    if not 0 <= database < REDIS_DATABASES:
        raise pytest.UsageError(
            f"xdist worker gw{index} would use Redis database {database}: REDIS_URL's database ({base}) "
            "must be at least the number of workers minus one (workers count down from it)"
        )
    return urlunsplit(parts._replace(path=f"/{database}"))


# Runs in the new worker process before pytest (and so Django's settings) starts there.
_SET_ENVIRONMENT = """
import os
os.environ.update(channel.receive())
"""


def point_worker_at_its_redis(node, environ) -> None:
    """In the controller, as a worker is set up: put its REDIS_URL in its environment."""
    url = environ.get("REDIS_URL")
    if not url or not url.startswith(("redis://", "rediss://")):
        return  # no Redis (embedded settings) or a socket URL: nothing to split
    own = redis_url_for_worker(url, worker_index(node.workerinput["workerid"]))
    channel = node.gateway.remote_exec(_SET_ENVIRONMENT)
    channel.send({"REDIS_URL": own})
    channel.waitclose()
    node.workerinput["taskflow_base_redis_url"] = url
    node.workerinput["taskflow_redis_url"] = own


def check_worker_redis(config) -> None:
    """In a worker: Django's settings must have read the URL set for it (or workers would
    share a Redis database without a word, e.g. if settings were read before the change)."""
    from django.conf import settings

    expected = getattr(config, "workerinput", {}).get("taskflow_redis_url")
    if expected and expected != settings.REDIS_URL:
        raise pytest.UsageError(f"this xdist worker should use {expected}, but settings say {settings.REDIS_URL}")


def long_modules_first(items: list) -> None:
    """Put the modules that hold a `slow` test first (in place, otherwise in collection order).

    `--dist loadfile` hands whole modules to the workers in collection order as they free up:
    a module of two minutes collected last (the fuzzing, in tests/) would run alone at the end
    while the other workers idle. Handed out first, the long modules overlap with the rest.
    """
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)
