"""Shared fixtures: the fixed cast of users, API clients, and real Celery workers."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from apps.core.testing import Worker

PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def make_user(db, django_user_model):
    def make(email, **fields):
        return django_user_model.objects.create_user(email=email, password=PASSWORD, **fields)

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com", full_name="Olivia Owner")


@pytest.fixture
def other_user(make_user):
    return make_user("other@example.com", full_name="Oscar Other")


@pytest.fixture
def staff(make_user):
    return make_user("staff@example.com", full_name="Sam Staff", is_staff=True, is_superuser=True)


@pytest.fixture
def api():
    return APIClient()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def owner_api(owner):
    return client_for(owner)


@pytest.fixture
def other_api(other_user):
    return client_for(other_user)


@pytest.fixture
def staff_api(staff):
    return client_for(staff)


@pytest.fixture(scope="session")
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()  # stale messages of an earlier run must not reach this run's workers
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, redis_client, tmp_path_factory):
    from django.db import connection

    var_dir = tmp_path_factory.mktemp("worker-var")
    mail_dir = var_dir / "mail"
    mail_dir.mkdir()
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        TASKFLOW_VAR_DIR=str(var_dir),
        EMAIL_URL=f"filemail:///{mail_dir}",
        # Short leases so lost runs are noticed within seconds in the tests.
        TASK_LEASE_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def celery_worker(worker_env):
    """One worker for a test module; tests using it need `django_db(transaction=True)`."""
    worker = Worker(worker_env).start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(worker_env):
    """Start extra workers inside one test (for tests that kill them)."""
    started = []

    def start(**kwargs):
        worker = Worker(worker_env, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def mail_dir(worker_env):
    path = Path(worker_env["EMAIL_URL"].removeprefix("filemail:///"))
    for item in path.iterdir():
        item.unlink()
    return path


@pytest.fixture
def scratch_dir():
    path = Path(tempfile.mkdtemp(prefix="taskflow-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
