"""/metrics behind a bearer token when METRICS_TOKEN is set; open when it is not."""

import pytest

from tests.support.processes import gunicorn_command, http

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_metrics_without_the_token_is_a_401_that_asks_for_a_bearer_token(api, metrics_token):
    response = api.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"taskflow_" not in response.content


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer ", "Bearer"]
)
def test_metrics_with_a_wrong_token_is_a_401(api, metrics_token, authorization):
    assert api.get("/metrics", HTTP_AUTHORIZATION=authorization).status_code == 401


def test_metrics_with_the_token_is_answered(api, metrics_token):
    response = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert b"# TYPE" in response.content


def test_metrics_is_open_without_a_token_configured(api, settings):
    settings.METRICS_TOKEN = ""

    assert api.get("/metrics").status_code == 200


def test_a_web_server_started_with_metrics_token_protects_metrics(web_env, start_web):
    web = start_web(web_env | {"METRICS_TOKEN": TOKEN}, gunicorn_command(workers=1, threads=2))

    assert http("GET", web.url("/metrics")).status == 401
    assert http("GET", web.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert http("GET", web.url("/healthz")).status == 200  # probes need no token
