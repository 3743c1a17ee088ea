import pytest
from django.urls import reverse

from apps.accounts.models import ApiKey, User
from conftest import PASSWORD
from tests.support.callbacks import besides_live_notices

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"
KEYS = "/api/auth/api-keys/"


def register(api, **overrides):
    data = {"email": "new@example.com", "password": PASSWORD, "full_name": "Nina New"} | overrides
    return api.post(REGISTER, data, format="json")


def test_register_creates_user_with_argon2_hash(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = register(api, email="New@Example.com")
    assert response.status_code == 201
    assert response.json()["email"] == "new@example.com"
    assert "password" not in response.json()
    user = User.objects.get(email="new@example.com")
    assert user.password.startswith("argon2$")
    assert user.full_name == "Nina New"
    assert len(besides_live_notices(callbacks)) == 1  # the welcome email is queued only after commit


def test_register_duplicate_email_is_a_field_error(api, owner):
    response = register(api, email="OWNER@example.com")
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid"
    assert "email" in body["fields"]
    assert User.objects.filter(email__iexact="owner@example.com").count() == 1


def test_register_weak_password_is_rejected(api):
    response = register(api, password="12345678")
    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]
    assert not User.objects.filter(email="new@example.com").exists()


def test_register_malformed_email_is_rejected(api):
    response = register(api, email="not-an-email")
    assert response.status_code == 400
    assert "email" in response.json()["error"]["fields"]


def test_register_malformed_json_is_a_400(api):
    response = api.post(REGISTER, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_token_with_right_credentials_gives_access_and_refresh(api, owner):
    response = api.post(TOKEN, {"email": "owner@example.com", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    tokens = response.json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api.get(ME).json()["email"] == "owner@example.com"


def test_token_with_wrong_password_is_401(api, owner):
    response = api.post(TOKEN, {"email": "owner@example.com", "password": "wrong"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"


def test_refresh_rotates_and_reusing_the_old_refresh_is_401(api, owner):
    tokens = api.post(TOKEN, {"email": "owner@example.com", "password": PASSWORD}, format="json").json()
    rotated = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != tokens["refresh"]
    reused = api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "token_not_valid"


def test_logout_blacklists_the_refresh_token(api, owner):
    tokens = api.post(TOKEN, {"email": "owner@example.com", "password": PASSWORD}, format="json").json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json").status_code == 204
    api.credentials()
    assert api.post(REFRESH, {"refresh": tokens["refresh"]}, format="json").status_code == 401


def test_logout_with_someone_elses_refresh_token_is_refused(api, owner, other_user):
    others = api.post(TOKEN, {"email": "other@example.com", "password": PASSWORD}, format="json").json()
    mine = api.post(TOKEN, {"email": "owner@example.com", "password": PASSWORD}, format="json").json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {mine['access']}")
    assert api.post(LOGOUT, {"refresh": others["refresh"]}, format="json").status_code == 400
    api.credentials()
    assert api.post(REFRESH, {"refresh": others["refresh"]}, format="json").status_code == 200


def test_me_patch_changes_the_name(owner_api, owner):
    response = owner_api.patch(ME, {"full_name": "Olivia O."}, format="json")
    assert response.status_code == 200
    owner.refresh_from_db()
    assert owner.full_name == "Olivia O."


def test_me_patch_with_an_email_is_a_400_that_changes_nothing(owner_api, owner):
    response = owner_api.patch(ME, {"full_name": "Olivia O.", "email": "evil@example.com"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["email"]
    owner.refresh_from_db()
    assert (owner.full_name, owner.email) == ("Olivia Owner", "owner@example.com")


def test_anonymous_caller_gets_401_with_the_error_shape(api):
    response = api.get(ME)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {
        "error": {"code": "not_authenticated", "message": "Authentication credentials were not provided."}
    }


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_api_key_is_shown_once_and_authenticates(owner_api, api, owner):
    created = owner_api.post(KEYS, {"name": "ci"}, format="json")
    assert created.status_code == 201
    raw_key = created.json()["key"]
    assert raw_key.startswith(f"tf_{created.json()['prefix']}_")
    stored = ApiKey.objects.get(user=owner)
    assert raw_key not in (stored.key_hash, stored.prefix)
    listed = owner_api.get(KEYS).json()
    assert "key" not in listed[0]
    assert "key" not in owner_api.get(f"{KEYS}{stored.pk}/").json()

    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert api.get(ME).json()["email"] == "owner@example.com"
    stored.refresh_from_db()
    assert stored.last_used_at is not None


def test_wrong_api_key_is_401(api, owner):
    api.credentials(HTTP_AUTHORIZATION="Api-Key tf_deadbeef_not-a-real-key")
    response = api.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_revoked_api_key_stops_working(owner_api, api, owner):
    created = owner_api.post(KEYS, {"name": "ci"}, format="json").json()
    assert owner_api.delete(f"{KEYS}{created['id']}/").status_code == 204
    assert ApiKey.objects.get(pk=created["id"]).revoked_at is not None
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {created['key']}")
    assert api.get(ME).status_code == 401


def test_another_users_api_key_is_404(owner_api, other_api):
    created = owner_api.post(KEYS, {"name": "mine"}, format="json").json()
    assert other_api.get(f"{KEYS}{created['id']}/").status_code == 404
    assert other_api.delete(f"{KEYS}{created['id']}/").status_code == 404
    assert ApiKey.objects.get(pk=created["id"]).revoked_at is None


def test_auth_urls_are_namespaced():
    assert reverse("auth:token") == TOKEN
