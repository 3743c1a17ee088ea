"""The async transport: the sync one's twin (same retries, refresh and errors) on httpx.AsyncClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx

from . import _calls as calls
from ._retry import RetryPolicy, token_is_fresh
from ._transport import USER_AGENT, Credentials, is_idempotent, send_kwargs
from .errors import AuthenticationError, TransportError, error_from_response

T = TypeVar("T")


class AsyncTransport:
    def __init__(self, base_url: str, credentials: Credentials, *, timeout: float, retry: RetryPolicy,
                 http: httpx.AsyncClient | None = None, **client_options: Any):  # fmt: skip
        self.credentials = credentials
        self.retry = retry
        self.http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}, **client_options
        )
        self._auth_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.http.aclose()

    # --- authentication -----------------------------------------------------------------------
    async def login(self) -> None:
        assert self.credentials.email and self.credentials.password
        tokens = await self.call(calls.token_obtain(self.credentials.email, self.credentials.password))
        self.credentials.access, self.credentials.refresh = tokens.access, tokens.refresh

    async def refresh_tokens(self, stale_access: str | None) -> None:
        """Refresh the access token (or log in again when the refresh token expired too).

        Under the lock, and only if no other thread already replaced `stale_access`: the
        server rotates refresh tokens and blacklists the old one on first use.
        """
        async with self._auth_lock:
            if self.credentials.access != stale_access and token_is_fresh(self.credentials.access):
                return
            if self.credentials.refresh:
                try:
                    tokens = await self.call(calls.token_refresh(self.credentials.refresh))
                    self.credentials.access, self.credentials.refresh = tokens.access, tokens.refresh
                    return
                except AuthenticationError:
                    if not self.credentials.password:
                        raise
            if not self.credentials.password:
                raise AuthenticationError("The access token expired and there is no way to renew it.", code="no_login")
            await self.login()

    async def _auth_header(self) -> str | None:
        if self.credentials.uses_tokens and not token_is_fresh(self.credentials.access):
            await self.refresh_tokens(self.credentials.access)
        return self.credentials.header()

    # --- requests -----------------------------------------------------------------------------
    async def call(self, call: calls.Call[T]) -> T:
        async with self.send(call) as response:
            await response.aread()
            return call.parse(response)

    @asynccontextmanager
    async def send(self, call: calls.Call[Any], *, stream: bool = False, headers: dict[str, str] | None = None,
             timeout: Any = None, follow_redirects: bool = False) -> AsyncIterator[httpx.Response]:  # fmt: skip
        """Send with retries; yield the successful response (streamed if asked), raise errors typed."""
        idempotent = is_idempotent(call)
        attempt = 0
        renewed = False
        while True:
            request_headers = dict(headers or {})
            authorization = await self._auth_header() if call.authenticated else None
            if authorization:
                request_headers["Authorization"] = authorization
            request = self.http.build_request(
                call.method, call.path, headers=request_headers, timeout=timeout or self.http.timeout,
                **send_kwargs(call),
            )  # fmt: skip
            try:
                response = await self.http.send(request, stream=True, follow_redirects=follow_redirects)
            except httpx.TransportError as error:
                delay = self.retry.delay_after_error(attempt, error, idempotent=idempotent)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {error!r}", code="connection_error") from error
                await asyncio.sleep(delay)
                attempt += 1
                continue
            try:
                if response.status_code < 400:
                    if not stream:
                        await response.aread()
                    yield response
                    return
                await response.aread()
                if response.status_code == 401 and call.authenticated and self.credentials.uses_tokens and not renewed:
                    renewed = True
                    await self.refresh_tokens(self.credentials.access)
                    continue
                delay = self.retry.delay_after_response(attempt, response, idempotent=idempotent)
                if delay is None:
                    raise error_from_response(response)
            finally:
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1
