"""Fixtures of the reliability suite: its own Redis, named workers, a gunicorn web, the report."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.processes import WebServer, Worker, gunicorn_command

from . import report
from .harness import RedisServer, worker_env_for


@pytest.fixture(scope="session", autouse=True)
def reliability_report():
    """Figures recorded by the scenarios go to docs/reliability.json (and docs/reliability.md) at the end."""
    yield report
    report.write()


@pytest.fixture
def fast_reaper(settings):
    """The reaper re-publishes a wake-up after 1 s instead of a minute (the workers' leases are 3 s)."""
    settings.TASK_REDISPATCH_AFTER = 1
    return settings


@pytest.fixture
def own_redis(tmp_path):
    """A throwaway redis-server for the scenarios that restart, flush or stop Redis."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def spawn_worker(worker_env):
    """Start named Celery workers in a test; `redis_url` points one at another Redis."""
    started = []

    def spawn(*, name: str, concurrency: int = 2, redis_url: str | None = None, prefetch: int | None = None) -> Worker:
        env = worker_env_for(worker_env, role="worker", redis_url=redis_url)
        if prefetch is not None:
            env["WORKER_PREFETCH_MULTIPLIER"] = str(prefetch)
        worker = Worker(env, concurrency=concurrency, name=name).start()
        started.append(worker)
        return worker

    def many(*names: str, **kwargs) -> list[Worker]:
        """Start several workers at once (each takes seconds to boot)."""
        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(lambda name: spawn(name=name, **kwargs), names))

    spawn.many = many
    yield spawn
    for worker in started:
        worker.stop()


@pytest.fixture
def spawn_web(worker_env, tmp_path):
    """Start the deployed web command (gunicorn, deploy/gunicorn.conf.py) on the test database,
    with rates no test reaches (every request comes from 127.0.0.1)."""
    started = []

    def spawn(*, workers: int = 1, threads: int = 4, redis_url: str | None = None) -> WebServer:
        env = worker_env_for(worker_env, role="web", redis_url=redis_url)
        env |= {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"web-metrics-{len(started)}"),
            "RATE_LIMIT_USER": "100000/min",
            "RATE_LIMIT_ANON": "100000/min",
            "RATE_LIMIT_AUTH": "100000/min",
        }
        server = WebServer(env, gunicorn_command(workers=workers, threads=threads), name="rel-web").start()
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.stop()
