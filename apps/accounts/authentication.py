"""API authentication: API keys, and simplejwt's access tokens, with active users and keys
remembered per process for AUTH_CACHE_SECONDS.

Looking a key or a token's user up through the ORM on every call (building, compiling and
running the query, then building the model instance) was a sixth of the CPU of a
`POST /api/tasks/`. Each web process keeps what it found for a few seconds instead: a key's
row and its user, a token's user. The price is a documented revocation delay: a key revoked,
or a user deactivated, by another process keeps working in this one for at most
AUTH_CACHE_SECONDS (default 5; 0 turns the cache off). Within one process (the admin action
or API call that revoked it, or a test) it stops at once: saving or deleting a user or a key
forgets that user's entries here. Each request gets its own copy of the user, so nothing one
request sets on it (permission caches, attributes) reaches another.
"""

import copy
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed as JWTAuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from .models import ApiKey, User, hash_api_key

KEYWORD = "Api-Key"
# Recording every use would turn each API call into a write; a minute's precision is plenty.
LAST_USED_PRECISION = timedelta(minutes=1)


class CredentialCache:
    """What this process found for a credential, until a deadline: {key: (deadline, user id, value)}.

    Reads take no lock (one dict lookup); writes prune expired entries when the map is full.
    """

    MAX_ENTRIES = 10_000

    def __init__(self):
        self._entries: dict = {}
        self._lock = threading.Lock()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[2]

    def put(self, key, *, user_id: int, value) -> None:
        seconds = settings.AUTH_CACHE_SECONDS
        if seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries = {}
            self._entries[key] = (now + seconds, user_id, value)

    def forget_user(self, user_id) -> None:
        with self._lock:
            self._entries = {k: e for k, e in self._entries.items() if e[1] != user_id}

    def clear(self) -> None:
        with self._lock:
            self._entries = {}


credentials = CredentialCache()


def _forget_user(sender, instance, **kwargs):
    credentials.forget_user(instance.pk if sender is User else instance.user_id)


for _model in (User, ApiKey):
    post_save.connect(_forget_user, sender=_model, dispatch_uid=f"auth-cache-{_model.__name__}-save")
    post_delete.connect(_forget_user, sender=_model, dispatch_uid=f"auth-cache-{_model.__name__}-delete")


def _own_copy(user: User) -> User:
    """The request's own instance of a cached user (Model.__getstate__ copies its state)."""
    return copy.copy(user)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>` for service clients."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() != KEYWORD.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Api-Key header: expected 'Api-Key <key>'.")
        try:
            raw_key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        key_hash = hash_api_key(raw_key)
        api_key = credentials.get(("api-key", key_hash))
        if api_key is None:
            api_key = ApiKey.objects.active().select_related("user").filter(key_hash=key_hash).first()
            if api_key is None or not api_key.user.is_active:
                raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
            credentials.put(("api-key", key_hash), user_id=api_key.user_id, value=api_key)
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_PRECISION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now  # the cached row too: one write a minute per key and process
        return _own_copy(api_key.user), api_key

    def authenticate_header(self, request):
        return KEYWORD


class JWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's access tokens, with the token's user remembered as above."""

    def get_user(self, validated_token):
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        user = credentials.get(("jwt-user", user_id))
        if user is None:
            user = super().get_user(validated_token)  # simplejwt's lookup and checks
            credentials.put(("jwt-user", user_id), user_id=user.pk, value=_own_copy(user))
            return user
        # simplejwt's checks again, on the remembered user.
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise JWTAuthenticationFailed("User is inactive", code="user_inactive")
        if jwt_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            jwt_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise JWTAuthenticationFailed("The user's password has been changed.", code="password_changed")
        return _own_copy(user)
