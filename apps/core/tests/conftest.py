import uuid

import pytest

from apps.core import throttling
from tests.support.processes import WebServer, process_starter


@pytest.fixture
def web_env(worker_env, tmp_path):
    """Environment for a web server subprocess: the test database and Redis, JSON logs,
    a metrics directory of its own, and rates no test reaches unless it lowers them."""
    metrics_dir = tmp_path / "web-metrics"
    return worker_env | {
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "RATE_LIMIT_USER": "100000/min",
        "RATE_LIMIT_ANON": "100000/min",
        "RATE_LIMIT_AUTH": "100000/min",
    }


@pytest.fixture
def start_web():
    """Start real web servers (gunicorn, uvicorn) inside one test; stopped after it."""
    with process_starter(lambda env, command, name="web": WebServer(env, command, name=name)) as start:
        yield start


@pytest.fixture
def rate_limit_prefix(monkeypatch):
    """Buckets of this test only: the test Redis keeps its keys for the whole session."""
    prefix = f"test-ratelimit:{uuid.uuid4().hex}"
    monkeypatch.setattr(throttling, "KEY_PREFIX", prefix)
    return prefix
