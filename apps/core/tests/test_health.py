import pytest

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_dependencies(api, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers(api):
    response = api.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "storage": "ok", "redis": "ok"}


def test_readyz_is_503_and_names_redis_when_it_is_unreachable(api, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = api.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("error: ConnectionError")
    assert body["checks"]["database"] == "ok"


def test_readyz_checks_the_filesystem_broker_in_the_embedded_mode(api, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == "ok"
