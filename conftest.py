"""Shared fixtures: the fixed cast of users, API clients, and real Celery workers."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from tests.support import parallel
from tests.support.hashers import use_quick_hasher
from tests.support.processes import Beat, WebServer, Worker, process_starter

PASSWORD = "correct-horse-battery-staple-42"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist (`make test`): each worker gets a Redis database of its own (tests/support/parallel.py)."""
    parallel.point_worker_at_its_redis(node, os.environ)


def pytest_configure(config):
    parallel.check_worker_redis(config)
    use_quick_hasher(settings)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker: the long modules are handed out first
        parallel.long_modules_first(items)


@pytest.fixture(autouse=True)
def generous_rate_limits(settings):
    """Every test shares 127.0.0.1 as client IP: only the rate-limit tests set real limits."""
    settings.RATE_LIMITS = {"user": "100000/min", "anon": "100000/min", "auth": "100000/min"}


@pytest.fixture(autouse=True)
def forget_remembered_credentials():
    """Each test starts with an empty per-process cache of users and API keys."""
    from apps.accounts.authentication import credentials

    credentials.clear()


@pytest.fixture(autouse=True)
def forget_concurrency_limits():
    """Each test reads the concurrency limits afresh (a process keeps them for a second), and
    the fair claim starts with no ranking of any queue."""
    from apps.tasks import fairness

    fairness.forget()


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
        # Several workers run at once: none serves metrics unless its test gives it a port.
        WORKER_METRICS_PORT="0",
        # Webhook receivers in the tests listen on 127.0.0.1; retries come fast.
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        WEBHOOK_RETRY_BASE="0.5",
        WEBHOOK_TIMEOUT="1",
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
    with process_starter(lambda **kwargs: Worker(worker_env, **kwargs)) as start:
        yield start


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
def start_beat(worker_env):
    """Start real `celery beat` processes inside one test."""
    with process_starter(lambda name="beat": Beat(worker_env, name=name)) as start:
        yield start


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


# --- S3 (moto server) ---------------------------------------------------------------------
S3_TEST_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible HTTP endpoint for the whole session: moto's server on 127.0.0.1.

    Port 0 lets the OS pick a free port. moto does not check signatures, expiry or POST
    policies, so those rules are tested on the generated policy and URLs themselves.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class S3Bucket:
    """The bucket a test's default storage points at, with a boto3 client to inspect it."""

    def __init__(self, endpoint_url: str, name: str):
        import boto3

        self.endpoint_url = endpoint_url
        self.name = name
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=S3_TEST_CREDENTIALS["access_key"],
            aws_secret_access_key=S3_TEST_CREDENTIALS["secret_key"],
            region_name=S3_TEST_CREDENTIALS["region_name"],
        )

    @property
    def env(self) -> dict:
        """Environment for subprocesses (e.g. `worker_env | s3_storage.env`) to use this bucket."""
        return {
            "AWS_STORAGE_BUCKET_NAME": self.name,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_TEST_CREDENTIALS["access_key"],
            "AWS_SECRET_ACCESS_KEY": S3_TEST_CREDENTIALS["secret_key"],
            "AWS_S3_REGION_NAME": S3_TEST_CREDENTIALS["region_name"],
        }

    def object_keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return [item["Key"] for page in pages for item in page.get("Contents", ())]

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def head(self, key: str) -> dict:
        return self.client.head_object(Bucket=self.name, Key=key)


@pytest.fixture
def s3_storage(s3_server, settings):
    """Point the default storage at a fresh bucket on the moto server, as the real stack does."""
    import uuid

    from django.core.files.storage import default_storage

    bucket = S3Bucket(s3_server, f"taskflow-test-{uuid.uuid4().hex[:16]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    settings.AWS_STORAGE_BUCKET_NAME = bucket.name
    settings.AWS_S3_ENDPOINT_URL = s3_server
    settings.AWS_ACCESS_KEY_ID = S3_TEST_CREDENTIALS["access_key"]
    settings.AWS_SECRET_ACCESS_KEY = S3_TEST_CREDENTIALS["secret_key"]
    settings.AWS_S3_REGION_NAME = S3_TEST_CREDENTIALS["region_name"]
    # Assigning STORAGES sends setting_changed, which drops Django's cached storage
    # backends, so `default_storage` and every FileField's storage are built anew.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "apps.files.s3.ObjectStorage",
            "OPTIONS": {
                "bucket_name": bucket.name,
                "endpoint_url": s3_server,
                **S3_TEST_CREDENTIALS,
                "addressing_style": "path",
                "signature_version": "s3v4",
                "file_overwrite": False,
                "querystring_expire": 300,
                "default_acl": None,
            },
        },
    }
    assert default_storage.bucket_name == bucket.name
    yield bucket
    for key in bucket.object_keys():
        bucket.client.delete_object(Bucket=bucket.name, Key=key)
    bucket.client.delete_bucket(Bucket=bucket.name)


# --- Admin roles ---------------------------------------------------------------------------
# Staff members in the groups the accounts.0002_roles migration creates.


def role_group(name: str):
    """The group as the migration made it; made again after a transactional test's flush."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group

    if not Group.objects.filter(name=name).exists():
        importlib.import_module("apps.accounts.migrations.0002_roles").create_roles(apps, None)
        importlib.import_module("apps.accounts.migrations.0003_schedule_and_webhook_roles").add_permissions(apps, None)
        importlib.import_module("apps.accounts.migrations.0005_concurrency_limit_roles").add_permissions(apps, None)
    return Group.objects.get(name=name)


@pytest.fixture
def operator(make_user):
    user = make_user("operator@example.com", full_name="Opal Operator", is_staff=True)
    user.groups.add(role_group("Operators"))
    return user


@pytest.fixture
def viewer(make_user):
    user = make_user("viewer@example.com", full_name="Vera Viewer", is_staff=True)
    user.groups.add(role_group("Viewers"))
    return user


# Django test clients signed in to the admin as each role.
@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def superuser(make_user):
    return make_user("root@example.com", full_name="Rita Root", is_staff=True, is_superuser=True)
