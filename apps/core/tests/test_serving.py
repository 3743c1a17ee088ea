"""Serving: gunicorn (WSGI, the default) and uvicorn (ASGI) run the same app; readiness follows PostgreSQL."""

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from apps.tasks.models import Task
from tests.support.processes import free_port, gunicorn_command, http, uvicorn_command


@pytest.mark.django_db(transaction=True)
def test_uvicorn_serves_the_asgi_app_health_checks_and_an_authenticated_api_call(owner, web_env, start_web):
    Task.objects.create(owner=owner, kind="demo.noop", title="served over ASGI")
    web = start_web(web_env, uvicorn_command(), name="uvicorn")
    assert http("GET", web.url("/healthz")).json() == {"status": "ok"}
    headers = {"Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}", "X-Request-ID": "asgi-1"}
    response = http("GET", web.url("/api/tasks/"), headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-ID"] == "asgi-1"
    assert [task["title"] for task in response.json()["results"]] == ["served over ASGI"]
    assert http("GET", web.url("/api/tasks/")).status == 401
    assert http("GET", web.url("/metrics")).status == 200


@pytest.fixture
def web_without_postgresql(web_env, start_web):
    """gunicorn whose DATABASE_URL points at a port nothing listens on."""
    env = web_env | {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/taskflow"}
    return start_web(env, gunicorn_command(workers=1), name="web-no-db")


def test_readyz_is_503_and_names_the_database_when_postgresql_is_unreachable(web_without_postgresql):
    response = http("GET", web_without_postgresql.url("/readyz"))
    assert response.status == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: OperationalError")
    assert body["checks"]["redis"] == "ok"


def test_healthz_and_metrics_still_answer_while_postgresql_is_unreachable(web_without_postgresql):
    assert http("GET", web_without_postgresql.url("/healthz")).status == 200
    metrics = http("GET", web_without_postgresql.url("/metrics"))
    assert metrics.status == 200
    assert b"taskflow_queue_depth{" in metrics.body, "broker gauges are still collected"
