"""Active users and API keys are remembered per process for AUTH_CACHE_SECONDS.

A change made elsewhere (another web process: here a queryset update, which sends no model
signal) reaches this process after the delay at the latest, and at once when the delay is 0;
a change saved in this process takes effect at once.
"""

import time

import pytest
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts import authentication
from apps.accounts.models import ApiKey, User
from apps.accounts.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
DELAY = 1


@pytest.fixture(autouse=True)
def empty_cache():
    authentication.credentials.clear()
    yield
    authentication.credentials.clear()


def api_key_client(user) -> tuple[APIClient, ApiKey]:
    api_key, raw = api_key_create(user=user, name="cache")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client, api_key


def jwt_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


def wait_out_the_delay():
    time.sleep(DELAY + 0.1)


def test_a_key_revoked_elsewhere_works_until_the_delay_is_over_then_is_401(owner, settings):
    settings.AUTH_CACHE_SECONDS = DELAY
    client, api_key = api_key_client(owner)
    assert client.get(ME).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    assert client.get(ME).status_code == 200  # the documented revocation delay
    wait_out_the_delay()
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_user_deactivated_elsewhere_loses_key_and_token_after_the_delay(owner, settings):
    settings.AUTH_CACHE_SECONDS = DELAY
    key_client, _ = api_key_client(owner)
    token_client = jwt_client(owner)
    assert key_client.get(ME).status_code == 200
    assert token_client.get(ME).status_code == 200
    User.objects.filter(pk=owner.pk).update(is_active=False)
    wait_out_the_delay()
    assert key_client.get(ME).status_code == 401
    assert token_client.get(ME).status_code == 401


def test_with_a_delay_of_0_revocation_and_deactivation_elsewhere_apply_at_once(owner, other_user, settings):
    settings.AUTH_CACHE_SECONDS = 0
    client, api_key = api_key_client(owner)
    token_client = jwt_client(other_user)
    assert client.get(ME).status_code == 200
    assert token_client.get(ME).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    User.objects.filter(pk=other_user.pk).update(is_active=False)
    assert client.get(ME).status_code == 401
    assert token_client.get(ME).status_code == 401


def test_a_revocation_or_deactivation_saved_in_this_process_applies_at_once(owner, other_user, settings):
    settings.AUTH_CACHE_SECONDS = 300
    client, api_key = api_key_client(owner)
    token_client = jwt_client(other_user)
    assert client.get(ME).status_code == 200
    assert token_client.get(ME).status_code == 200
    api_key_revoke(api_key=api_key)
    other_user.is_active = False
    other_user.save(update_fields=["is_active"])
    assert client.get(ME).status_code == 401
    assert token_client.get(ME).status_code == 401


def test_a_remembered_user_is_served_without_a_query_and_as_each_requests_own_copy(
    owner, settings, django_assert_num_queries
):
    settings.AUTH_CACHE_SECONDS = 300
    _, raw = api_key_create(user=owner, name="cache")
    request = APIRequestFactory().get(ME, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    first, _ = authentication.ApiKeyAuthentication().authenticate(request)
    first.cached_marker = "set by one request"
    with django_assert_num_queries(0):
        second, api_key = authentication.ApiKeyAuthentication().authenticate(request)
    assert second.pk == first.pk == owner.pk and second is not first
    assert not hasattr(second, "cached_marker")
    assert api_key.user_id == owner.pk


def test_the_last_use_of_a_remembered_key_is_still_recorded(owner, settings):
    settings.AUTH_CACHE_SECONDS = 300
    client, api_key = api_key_client(owner)
    assert client.get(ME).status_code == 200
    first_use = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first_use is not None
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=None)
    assert client.get(ME).status_code == 200  # cached: the row's last use is not read again
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None  # a minute's precision holds
