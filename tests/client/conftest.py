"""A real TaskFlow for the client's tests: gunicorn and a Celery worker on the test database."""

from pathlib import Path

import pytest

from tests.support.processes import BASE_DIR, WebServer, Worker, gunicorn_command, process_starter

# The cast's password (the root conftest.py's make_user).
PASSWORD_FOR_CLIENT_TESTS = "correct-horse-battery-staple-42"
CLIENT_DIR = BASE_DIR / "clients" / "python"


@pytest.fixture(scope="package")
def server_env(worker_env):
    return worker_env | {
        "RATE_LIMIT_USER": "100000/min",
        "RATE_LIMIT_ANON": "100000/min",
        "RATE_LIMIT_AUTH": "100000/min",
    }


@pytest.fixture(scope="package")
def taskflow_server(server_env, worker_env):
    """One web server and one worker for the client's tests (which need `django_db(transaction=True)`)."""
    worker = Worker(worker_env).start()
    try:
        with process_starter(lambda: WebServer(server_env, gunicorn_command(workers=1, threads=4))) as start:
            yield start()
    finally:
        worker.stop()


@pytest.fixture
def start_web():
    """Extra web servers with their own settings (a low rate limit), stopped after the test."""
    with process_starter(lambda env: WebServer(env, gunicorn_command(workers=1, threads=4))) as start:
        yield start


@pytest.fixture
def api_key_for():
    from apps.accounts.services import api_key_create

    def make(user) -> str:
        return api_key_create(user=user, name="client tests")[1]

    return make


@pytest.fixture
def client_for(taskflow_server, api_key_for):
    from taskflow_client import TaskFlow

    made = []

    def make(user, **options):
        client = TaskFlow(taskflow_server.url(""), api_key=api_key_for(user), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def cli_env(taskflow_server, tmp_path):
    """Environment for `python -m taskflow_client`: the tree's client, a config dir of its own."""
    import os

    return dict(os.environ) | {
        "PYTHONPATH": str(CLIENT_DIR),
        "TASKFLOW_CONFIG": str(Path(tmp_path) / "taskflow" / "config.json"),
        "TASKFLOW_URL": taskflow_server.url(""),
        "COLUMNS": "200",
    }
