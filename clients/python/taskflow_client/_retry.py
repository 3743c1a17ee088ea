"""When to send a request again, and after how long: shared by the sync and async transports."""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import dataclass

import httpx

from .errors import error_body, retry_after_seconds

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Answers that say "not now" without having done anything a repeat could double.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
# The request never reached the server: safe to send again whatever it was.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; `Retry-After` wins when the server sends one.

    A 429 is retried for every method (the limiter refuses before the view runs); 502/503/504
    and broken connections only for idempotent calls (GET, PUT, DELETE, and submits that carry
    an idempotency key). A 429 with code `quota_exceeded` is never retried: room comes back
    only as tasks finish.
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A Retry-After longer than this is raised as RateLimited(retry_after) instead of slept.
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def delay_after_response(self, attempt: int, response: httpx.Response, *, idempotent: bool) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up and raise."""
        if attempt + 1 >= self.max_attempts:
            return None
        status = response.status_code
        if status == 429:
            if error_body(response).get("code") == "quota_exceeded":
                return None
            retry_after = retry_after_seconds(response)
            if retry_after is None:
                return self.backoff(attempt)
            # Whole seconds are rounded down by the server; a little extra avoids a second 429.
            return None if retry_after > self.max_retry_after else retry_after + random.uniform(0.05, 0.25)
        if status in TRANSIENT_STATUSES and idempotent:
            retry_after = retry_after_seconds(response)
            if retry_after is not None and retry_after <= self.max_retry_after:
                return retry_after
            return self.backoff(attempt)
        return None

    def delay_after_error(self, attempt: int, error: httpx.TransportError, *, idempotent: bool) -> float | None:
        if attempt + 1 >= self.max_attempts:
            return None
        if isinstance(error, NOT_SENT_ERRORS) or idempotent:
            return self.backoff(attempt)
        return None


def jwt_expires_at(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: only to refresh it a little before it lapses)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def token_is_fresh(token: str | None, margin: float = 30.0) -> bool:
    if not token:
        return False
    expires_at = jwt_expires_at(token)
    return expires_at is None or expires_at - margin > time.time()
