"""API rate limits: GCRA (the generic cell rate algorithm) in one Redis Lua script.

DRF's own throttles read the request history from the cache, decide, then write it back:
concurrent requests in several processes all read the same history, and a burst gets
through. Here the whole decision is one script, which Redis runs atomically, so a limit of
N lets exactly N requests through however many web processes and machines share the Redis.

GCRA keeps one number per bucket, the "theoretical arrival time" (TAT): a request is allowed
when TAT - now <= (limit - 1) x interval, and then moves TAT one interval on. A full bucket
allows `limit` requests at once, then one every `period / limit` seconds.

Without REDIS_URL (the embedded default) the same algorithm runs in process memory: limits
then hold per process, and a warning says so once.
"""

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from functools import cache

import redis
import structlog
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from .middleware import client_ip

logger = logging.getLogger(__name__)

_RATE = re.compile(r"([1-9]\d*)/(s|sec|second|m|min|minute|h|hour|d|day)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# KEYS[1]: the bucket. ARGV[1]: microseconds between requests at the steady rate; ARGV[2]: the
# limit (requests allowed at once). Returns {1, 0} when allowed, {0, microseconds to wait} when not.
# Redis' own clock, so web hosts with skewed clocks share one notion of "now".
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local allow_at = tat + interval - limit * interval
if allow_at > now then
  return {0, allow_at - now}
end
local new_tat = tat + interval
-- %.0f: Lua would write a number this large in exponent notation and lose microseconds.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0}
"""


def parse_rate(rate: str) -> tuple[int, int]:
    """'600/min' -> (600, 60): requests per period in seconds."""
    match = _RATE.fullmatch(rate.strip())
    if not match:
        raise ValueError(f"a rate looks like 600/min (a count per s, min, hour or day); got {rate!r}")
    return int(match.group(1)), _UNIT_SECONDS[match.group(2)[0]]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until a request would be allowed


class RedisLimiter:
    def __init__(self, url: str):
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        # register_script: EVALSHA, and EVAL once when Redis does not know the script yet.
        self._script = client.register_script(GCRA_SCRIPT)

    def hit(self, key: str, *, limit: int, period: int) -> Decision:
        interval_us = max(period * 1_000_000 // limit, 1)  # at least a microsecond: the key must expire
        allowed, wait_us = self._script(keys=[key], args=[interval_us, limit])
        return Decision(allowed=bool(allowed), retry_after=int(wait_us) / 1_000_000)


class LocalLimiter:
    """The same algorithm in process memory, for the embedded mode without Redis."""

    MAX_BUCKETS = 100_000

    def __init__(self):
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def hit(self, key: str, *, limit: int, period: int) -> Decision:
        interval = period / limit
        now = time.monotonic()
        with self._lock:
            if len(self._tat) > self.MAX_BUCKETS:
                self._tat = {k: tat for k, tat in self._tat.items() if tat > now}
            tat = max(self._tat.get(key, now), now)
            allow_at = tat + interval - limit * interval
            if allow_at > now:
                return Decision(allowed=False, retry_after=allow_at - now)
            self._tat[key] = tat + interval
        return Decision(allowed=True)


@cache
def _redis_limiter(url: str) -> RedisLimiter:
    return RedisLimiter(url)


@cache
def _local_limiter() -> LocalLimiter:
    logger.warning(
        "REDIS_URL is not set: rate limits are kept in this process's memory, so every web "
        "process allows the full rate; set REDIS_URL to share them"
    )
    return LocalLimiter()


def get_limiter() -> RedisLimiter | LocalLimiter:
    return _redis_limiter(settings.REDIS_URL) if settings.REDIS_URL else _local_limiter()


# Redis keys of the buckets: KEY_PREFIX:scope:ident.
KEY_PREFIX = "taskflow:ratelimit"
_last_store_warning = 0.0


def check_rate(*, scope: str, ident: str) -> Decision:
    """Count one request against the bucket of `scope` (a key of settings.RATE_LIMITS) for `ident`."""
    global _last_store_warning
    limit, period = parse_rate(settings.RATE_LIMITS[scope])
    key = f"{KEY_PREFIX}:{scope}:{ident}"
    try:
        return get_limiter().hit(key, limit=limit, period=period)
    except redis.RedisError as exc:
        # Fail open: with Redis down the API is degraded already; refusing every call would
        # turn that into a full outage. Say so, at most once a minute per process.
        if time.monotonic() - _last_store_warning > 60:
            _last_store_warning = time.monotonic()
            logger.warning("rate limits not enforced: Redis failed (%s: %s)", type(exc).__name__, exc)
        return Decision(allowed=True)


class ApiRateThrottle(BaseThrottle):
    """The default for every API view: per user when authenticated, per client IP otherwise."""

    def bucket(self, request) -> tuple[str, str]:
        user = request.user
        if user is not None and user.is_authenticated:
            return "user", f"user:{user.pk}"
        return "anon", f"ip:{client_ip(request)}"

    def allow_request(self, request, view) -> bool:
        user = request.user
        if user is not None and user.is_authenticated:
            # DRF authenticates inside the view, after the logging middleware bound the request:
            # throttling is the first step that knows the user, so log lines written while the
            # view runs (and tasks it publishes) carry the user id from here on.
            structlog.contextvars.bind_contextvars(user_id=user.pk)
        scope, ident = self.bucket(request)
        decision = check_rate(scope=scope, ident=ident)
        self._retry_after = decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        # DRF sends Retry-After only for a wait of at least a second; round up, never 0.
        return max(math.ceil(self._retry_after), 1)


class AuthRateThrottle(ApiRateThrottle):
    """register, token and token/refresh: the stricter "auth" bucket, per client IP."""

    def bucket(self, request) -> tuple[str, str]:
        return "auth", f"ip:{client_ip(request)}"
