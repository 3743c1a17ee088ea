"""Sessions and messages run for browsers and session-authenticated API calls, and not for API
calls that bring their own credentials in the Authorization header; CSRF holds for sessions."""

import pytest
from django.conf import settings
from django.middleware.csrf import get_token
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts.services import api_key_create
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
TASKS = "/api/tasks/"


def session_client(user, *, enforce_csrf_checks=False) -> APIClient:
    client = APIClient(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


@pytest.mark.parametrize("scheme", ["jwt", "api-key"])
def test_an_api_client_call_gets_no_session_or_cookie(owner, scheme):
    client = APIClient()
    if scheme == "jwt":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(owner)}")
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(user=owner, name='m')[1]}")
    response = client.post(TASKS, {"kind": "demo.noop"}, format="json")
    assert response.status_code == 201
    assert not hasattr(response.wsgi_request, "session")
    assert not response.cookies
    assert response["X-Request-ID"]  # the middleware every request gets still ran


def test_a_session_authenticated_api_call_still_works_with_the_full_stack(owner):
    response = session_client(owner).get(ME)
    assert response.status_code == 200
    assert response.json()["email"] == owner.email
    assert response["X-Frame-Options"] == "DENY"


def test_an_unsafe_session_authenticated_api_call_still_needs_the_csrf_token(owner):
    client = session_client(owner, enforce_csrf_checks=True)
    refused = client.post(TASKS, {"kind": "demo.noop"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]["message"]
    assert not Task.objects.filter(owner=owner).exists()

    token = get_token(client.get(ME).wsgi_request)
    client.cookies[settings.CSRF_COOKIE_NAME] = token
    accepted = client.post(TASKS, {"kind": "demo.noop"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert Task.objects.filter(owner=owner).count() == 1


def test_an_authorization_header_drf_does_not_take_is_not_rescued_by_a_session(owner):
    client = session_client(owner)
    client.credentials(HTTP_AUTHORIZATION="Basic b3duZXJAZXhhbXBsZS5jb206eA==")
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_admin_keeps_its_session_and_frame_policy(staff):
    client = session_client(staff)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    login = APIClient().get("/admin/login/")
    assert login.status_code == 200
    assert settings.CSRF_COOKIE_NAME in login.cookies
