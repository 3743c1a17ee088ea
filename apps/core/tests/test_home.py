"""The landing page at /: what is running and where to go, for anyone, with no secret in it."""

import pytest
from django.test import Client

from apps.core.tests.test_project import run_manage

pytestmark = pytest.mark.django_db

LINKS = ['href="/admin/"', 'href="/api/docs/"', 'href="/api/schema/"', 'href="/healthz"', 'href="/readyz"']


def test_the_landing_page_links_the_admin_the_api_docs_the_schema_and_the_health_checks():
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for link in LINKS:
        assert link in page


def test_the_landing_page_answers_head_without_a_body():
    response = Client().head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_the_landing_page_refuses_a_post():
    assert Client().post("/").status_code == 405


def test_the_landing_page_names_the_backends_of_the_test_stack():
    page = Client().get("/").content.decode()
    assert "PostgreSQL" in page and "Redis" in page and "local folder" in page
    assert ">mixed<" in page  # PostgreSQL and Redis, but files on the local disk


SECRETS = {
    "DATABASE_URL": "postgres://taskflow:db-secret-4471@db.internal.example:5432/taskflow",
    "REDIS_URL": "redis://:redis-secret-9012@cache.internal.example:6379/0",
    "AWS_STORAGE_BUCKET_NAME": "bucket-name-3318",
    "AWS_S3_ENDPOINT_URL": "http://minio.internal.example:9000",
    "AWS_ACCESS_KEY_ID": "access-key-5521",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-7734",
    "SECRET_KEY": "django-secret-key-that-must-never-show-0123456789abcdefghijklmnopqrstuvwxyz",
    "METRICS_TOKEN": "metrics-token-6650",
}


def test_the_landing_page_shows_no_password_host_key_or_bucket_of_the_real_stack():
    # A process of its own: settings read DATABASE_URL and the rest only at start-up. Rendering
    # the page needs none of these backends, which do not exist.
    script = "from django.test import Client; print(Client().get('/', HTTP_HOST='localhost').content.decode())"
    result = run_manage("shell", "-c", script, env_overrides=SECRETS | {"DEBUG": "true"})
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert "PostgreSQL" in page and "S3-compatible object store" in page and ">real stack<" in page
    for secret in [*SECRETS.values(), "db-secret-4471", "redis-secret-9012", "internal.example"]:
        assert secret not in page
