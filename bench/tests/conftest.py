"""What the bench's tests share: a database of the harness's own, and free ports."""

import contextlib
import socket
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture
def free_ports():
    """free_ports(n): ports nobody listens on right now, all different (each socket stays bound
    until all are picked). Both web ports come from the OS: a neighbour's port next to ours is no
    longer free for the stock server when the suite runs on several workers."""
    return _free_ports


@pytest.fixture
def bench_database_url():
    """A database of its own beside the test database: the harness creates and migrates it."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].split(".")[-1] != "postgresql" or not settings.REDIS_URL:
        pytest.skip("the bench runs on the real stack: PostgreSQL and Redis")
    name = f"{db['NAME']}_bench_smoke"
    server = f"postgres://{quote(db['USER'] or 'postgres')}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
