"""The suite's own parallel plumbing (tests/support/parallel.py)."""

import os
from types import SimpleNamespace

import pytest
from django.conf import settings

from tests.support.parallel import long_modules_first, redis_url_for_worker, worker_index


def test_workers_count_down_from_the_redis_database_of_the_url():
    assert redis_url_for_worker("redis://127.0.0.1:6379/15", 0) == "redis://127.0.0.1:6379/15"
    assert redis_url_for_worker("redis://127.0.0.1:6379/15", 1) == "redis://127.0.0.1:6379/14"
    assert redis_url_for_worker("redis://:secret@cache:6380/3?timeout=2", 3) == "redis://:secret@cache:6380/0?timeout=2"
    assert redis_url_for_worker("redis://127.0.0.1:6379", 0) == "redis://127.0.0.1:6379/0"


def test_a_database_below_zero_is_refused_rather_than_shared():
    with pytest.raises(pytest.UsageError, match="would use Redis database -1"):
        redis_url_for_worker("redis://127.0.0.1:6379/0", 1)


def test_this_process_and_its_subprocesses_use_the_redis_database_of_its_worker(request, worker_env):
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        pytest.skip("not under pytest-xdist")
    from taskflow_site.celery import app

    own = redis_url_for_worker(workerinput["taskflow_base_redis_url"], worker_index(workerinput["workerid"]))
    assert settings.REDIS_URL == own == os.environ["REDIS_URL"] == worker_env["REDIS_URL"]
    assert app.conf.broker_url == own and settings.CACHES["default"]["LOCATION"] == own


def item(module: str, slow: bool = False):
    return SimpleNamespace(
        module=SimpleNamespace(__name__=module),
        name=f"{module}-{'slow' if slow else 'quick'}",
        get_closest_marker=lambda name: object() if slow and name == "slow" else None,
    )


def test_modules_with_a_slow_test_go_first_and_keep_their_order():
    items = [item("a"), item("b"), item("c", slow=True), item("b", slow=True), item("d"), item("c")]
    long_modules_first(items)
    assert [(i.module.__name__, i.name) for i in items] == [
        ("b", "b-quick"),
        ("c", "c-slow"),
        ("b", "b-slow"),
        ("c", "c-quick"),
        ("a", "a-quick"),
        ("d", "d-quick"),
    ]
