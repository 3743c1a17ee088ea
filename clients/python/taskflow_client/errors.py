"""Typed exceptions for TaskFlow's error responses.

Every API error has one shape, `{"error": {"code", "message", "fields"?, ...}}`; each becomes
the exception of its status (or of its code, for `quota_exceeded`), carrying all of it.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class TaskFlowError(Exception):
    """Base of every error this client raises."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        fields: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = fields or {}
        self.body = body or {}

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status else self.code
        return f"{prefix}: {self.message}"


class TransportError(TaskFlowError):
    """The server could not be reached, or the connection broke, after every retry."""


class AuthenticationError(TaskFlowError):
    """401: no credentials, or they are invalid, revoked or expired."""


class ValidationError(TaskFlowError):
    """400: `fields` maps each field (dotted paths, list indexes in brackets) to its messages."""


class PermissionDenied(TaskFlowError):
    """403."""


class NotFound(TaskFlowError):
    """404: no such object, or it belongs to another user."""


class Conflict(TaskFlowError):
    """409: the object's state does not allow it (retry of a running task, a reused idempotency key)."""


class PayloadTooLarge(TaskFlowError):
    """413."""


class RateLimited(TaskFlowError):
    """429 with `Retry-After`, when the wait was longer than the client was allowed to sleep."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QuotaExceeded(TaskFlowError):
    """A quota is reached (429 for tasks not yet final, 400 for schedules and webhooks): not transient."""

    def __init__(
        self, message: str, *, quota: str = "", limit: int | None = None, current: int | None = None, **kw: Any
    ):
        super().__init__(message, **kw)
        self.quota = quota
        self.limit = limit
        self.current = current


class NotSupported(TaskFlowError):
    """501: this server does not offer it (e.g. presigned uploads with local storage)."""


class ServerError(TaskFlowError):
    """5xx."""


class ServiceUnavailable(ServerError):
    """503: a service TaskFlow depends on is down; retried for idempotent calls before this is raised."""


class WaitTimeout(TaskFlowError):
    """`wait()` or `events()` ran out of time before the task was final."""


BY_STATUS: dict[int, type[TaskFlowError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    501: NotSupported,
    503: ServiceUnavailable,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a response, or {} when the body is not the API's error shape."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def error_from_response(response: httpx.Response) -> TaskFlowError:
    error = error_body(response)
    status = response.status_code
    code = str(error.get("code") or ("server_error" if status >= 500 else "error"))
    message = str(error.get("message") or response.reason_phrase or f"HTTP {status}")
    common: dict[str, Any] = {"code": code, "status": status, "fields": error.get("fields"), "body": error}
    if code == "quota_exceeded":
        return QuotaExceeded(
            message, quota=str(error.get("quota", "")), limit=error.get("limit"), current=error.get("current"), **common
        )
    if status == 429:
        return RateLimited(message, retry_after=retry_after_seconds(response), **common)
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else TaskFlowError)
    return cls(message, **common)
