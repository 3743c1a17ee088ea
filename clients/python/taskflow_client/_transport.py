"""The sync transport: authentication, retries and error mapping around one httpx.Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from . import _calls as calls
from ._retry import IDEMPOTENT_METHODS, RetryPolicy, token_is_fresh
from .errors import AuthenticationError, TransportError, error_from_response

T = TypeVar("T")
USER_AGENT = "taskflow-client/0.1"


class Credentials:
    """What the client authenticates with: an API key, or email/password with JWTs it refreshes."""

    def __init__(self, *, api_key: str | None = None, email: str | None = None, password: str | None = None,
                 access: str | None = None, refresh: str | None = None):  # fmt: skip
        if api_key and (email or password):
            raise ValueError("give an API key or an email and password, not both")
        if bool(email) != bool(password):
            raise ValueError("give both the email and the password")
        self.api_key = api_key
        self.email = email
        self.password = password
        self.access = access
        self.refresh = refresh

    @property
    def uses_tokens(self) -> bool:
        return not self.api_key and bool(self.email or self.access or self.refresh)

    def header(self) -> str | None:
        if self.api_key:
            return f"Api-Key {self.api_key}"
        return f"Bearer {self.access}" if self.access else None


def send_kwargs(call: calls.Call[Any]) -> dict[str, Any]:
    return {"params": call.params, "json": call.json, "files": call.files, "data": call.data}


def is_idempotent(call: calls.Call[Any]) -> bool:
    return call.idempotent if call.idempotent is not None else call.method in IDEMPOTENT_METHODS


class SyncTransport:
    def __init__(self, base_url: str, credentials: Credentials, *, timeout: float, retry: RetryPolicy,
                 http: httpx.Client | None = None, **client_options: Any):  # fmt: skip
        self.credentials = credentials
        self.retry = retry
        self.http = http or httpx.Client(
            base_url=base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}, **client_options
        )
        self._auth_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # --- authentication -----------------------------------------------------------------------
    def login(self) -> None:
        assert self.credentials.email and self.credentials.password
        tokens = self.call(calls.token_obtain(self.credentials.email, self.credentials.password))
        self.credentials.access, self.credentials.refresh = tokens.access, tokens.refresh

    def refresh_tokens(self, stale_access: str | None) -> None:
        """Refresh the access token (or log in again when the refresh token expired too).

        Under the lock, and only if no other thread already replaced `stale_access`: the
        server rotates refresh tokens and blacklists the old one on first use.
        """
        with self._auth_lock:
            if self.credentials.access != stale_access and token_is_fresh(self.credentials.access):
                return
            if self.credentials.refresh:
                try:
                    tokens = self.call(calls.token_refresh(self.credentials.refresh))
                    self.credentials.access, self.credentials.refresh = tokens.access, tokens.refresh
                    return
                except AuthenticationError:
                    if not self.credentials.password:
                        raise
            if not self.credentials.password:
                raise AuthenticationError("The access token expired and there is no way to renew it.", code="no_login")
            self.login()

    def _auth_header(self) -> str | None:
        if self.credentials.uses_tokens and not token_is_fresh(self.credentials.access):
            self.refresh_tokens(self.credentials.access)
        return self.credentials.header()

    # --- requests -----------------------------------------------------------------------------
    def call(self, call: calls.Call[T]) -> T:
        with self.send(call) as response:
            response.read()
            return call.parse(response)

    @contextmanager
    def send(self, call: calls.Call[Any], *, stream: bool = False, headers: dict[str, str] | None = None,
             timeout: Any = None, follow_redirects: bool = False) -> Iterator[httpx.Response]:  # fmt: skip
        """Send with retries; yield the successful response (streamed if asked), raise errors typed."""
        idempotent = is_idempotent(call)
        attempt = 0
        renewed = False
        while True:
            request_headers = dict(headers or {})
            authorization = self._auth_header() if call.authenticated else None
            if authorization:
                request_headers["Authorization"] = authorization
            request = self.http.build_request(
                call.method, call.path, headers=request_headers, timeout=timeout or self.http.timeout,
                **send_kwargs(call),
            )  # fmt: skip
            try:
                response = self.http.send(request, stream=True, follow_redirects=follow_redirects)
            except httpx.TransportError as error:
                delay = self.retry.delay_after_error(attempt, error, idempotent=idempotent)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {error!r}", code="connection_error") from error
                time.sleep(delay)
                attempt += 1
                continue
            try:
                if response.status_code < 400:
                    if not stream:
                        response.read()
                    yield response
                    return
                response.read()
                if response.status_code == 401 and call.authenticated and self.credentials.uses_tokens and not renewed:
                    renewed = True
                    self.refresh_tokens(self.credentials.access)
                    continue
                delay = self.retry.delay_after_response(attempt, response, idempotent=idempotent)
                if delay is None:
                    raise error_from_response(response)
            finally:
                response.close()
            time.sleep(delay)
            attempt += 1
