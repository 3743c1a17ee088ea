"""Wake-ups for live task streams: Redis pub/sub, published after commit; the table stays the truth.

A message on the channel (`channel()`) says only *which* tasks changed ("task:<id> owner:<id>
..."); a stream that hears it reads what changed from the database (the stored history and
the task row). So a lost message costs latency, never an event: every stream also looks at
the table on its own every few seconds.

Publishing costs a Redis round trip, so a process publishes only while some stream is open
anywhere (the OPEN_FLAG key, set by open streams and expiring without them), and asks Redis
about that at most once a second.

Without Redis (the embedded mode) nothing is published and streams poll the table.
"""

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable

import redis
import redis.asyncio
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "taskflow:task-changes"
# A stream listening for ANY wakes on every message: the staff's dashboard counts.
ANY = "*"
OPEN_FLAG = "taskflow:streams:open"
# An open stream renews OPEN_FLAG and its slot this often; both outlive it by one period.
HEARTBEAT_SECONDS = 15
FLAG_CHECK_SECONDS = 1.0

_publisher: redis.Redis | None = None
_flag = {"checked": 0.0, "open": False}
_lock = threading.Lock()


@functools.cache
def _channel_for(url: str) -> str:
    return f"/{redis.connection.parse_url(url).get('db', 0)}.{CHANNEL}"


def channel() -> str:
    """CHANNEL prefixed with the number of REDIS_URL's database, as kombu prefixes its fanout.

    Pub/sub ignores Redis' database numbers: without the prefix, installations (or parallel
    test processes) on other databases of one Redis would wake each other's streams.
    """
    return _channel_for(settings.REDIS_URL)


def _client() -> redis.Redis:
    global _publisher
    if _publisher is None:
        _publisher = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    return _publisher


def _streams_open(client: redis.Redis) -> bool:
    now = time.monotonic()
    if now - _flag["checked"] >= FLAG_CHECK_SECONDS:
        with _lock:
            _flag["open"], _flag["checked"] = bool(client.exists(OPEN_FLAG)), now
    return _flag["open"]


def keys_of(tasks: Iterable) -> list[str]:
    keys = []
    for task in tasks:
        keys += [f"task:{task.pk}", f"owner:{task.owner_id}"]
    return keys


def publish(keys: list[str]) -> None:
    """Tell open streams these tasks changed, once the current transaction commits."""
    if not settings.REDIS_URL or not keys:
        return
    transaction.on_commit(functools.partial(_publish_now, keys))


def _publish_now(keys: list[str]) -> None:
    try:
        client = _client()
        if _streams_open(client):
            client.publish(channel(), " ".join(dict.fromkeys(keys)))
    except redis.RedisError as exc:  # streams fall back to reading the table
        logger.debug("live wake-up not published: %s", exc)


# --- Slots: open streams per user, across processes ---------------------------------------------


class Slots:
    """Open streams per user: a Redis sorted set of stream ids scored by expiry (so a stream of
    a killed process frees its slot one heartbeat later), or this process' memory without Redis."""

    def __init__(self):
        self._local: dict[int, dict[str, float]] = defaultdict(dict)

    def _key(self, user_id) -> str:
        return f"taskflow:streams:user:{user_id}"

    def acquire(self, user_id, limit: int) -> str | None:
        """A slot id, or None when the user has `limit` streams open already."""
        slot, now = uuid.uuid4().hex, time.time()
        expires = now + 2 * HEARTBEAT_SECONDS
        if not settings.REDIS_URL:
            mine = {s: t for s, t in self._local[user_id].items() if t > now}
            if len(mine) >= limit:
                return None
            self._local[user_id] = {**mine, slot: expires}
            return slot
        client, key = _client(), self._key(user_id)
        pipe = client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        _, count = pipe.execute()
        if count >= limit:
            return None
        pipe = client.pipeline()
        pipe.zadd(key, {slot: expires})
        pipe.expire(key, 2 * HEARTBEAT_SECONDS)
        pipe.set(OPEN_FLAG, 1, ex=2 * HEARTBEAT_SECONDS)
        pipe.execute()
        return slot

    def renew(self, user_id, slot: str) -> None:
        expires = time.time() + 2 * HEARTBEAT_SECONDS
        if not settings.REDIS_URL:
            self._local[user_id][slot] = expires
            return
        try:
            pipe = _client().pipeline()
            pipe.zadd(self._key(user_id), {slot: expires})
            pipe.expire(self._key(user_id), 2 * HEARTBEAT_SECONDS)
            pipe.set(OPEN_FLAG, 1, ex=2 * HEARTBEAT_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            logger.debug("stream slot not renewed: %s", exc)

    def release(self, user_id, slot: str) -> None:
        if not settings.REDIS_URL:
            self._local[user_id].pop(slot, None)
            return
        try:
            _client().zrem(self._key(user_id), slot)
        except redis.RedisError as exc:
            logger.debug("stream slot not released: %s", exc)


slots = Slots()


# --- Listening ------------------------------------------------------------------------------------


class AsyncHub:
    """One subscription per ASGI process, fanned out to the streams waiting in it."""

    def __init__(self):
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task | None = None

    def _ensure_listening(self) -> None:
        if settings.REDIS_URL and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel())
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake(message["data"].decode().split())
            except (redis.RedisError, OSError) as exc:
                logger.warning("live wake-ups interrupted (%s); streams read the table meanwhile", exc)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    def _wake(self, keys: list[str]) -> None:
        for key in [*keys, ANY]:
            for event in self._waiters.get(key, ()):
                event.set()

    async def wait(self, keys: list[str], timeout: float) -> None:
        """Return when one of `keys` changes, or after `timeout` seconds."""
        self._ensure_listening()
        event = asyncio.Event()
        for key in keys:
            self._waiters[key].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                self._waiters[key].discard(event)
                if not self._waiters[key]:
                    del self._waiters[key]


hub = AsyncHub()


class SyncListener:
    """A stream's own subscription under WSGI (a thread per stream there anyway)."""

    def __init__(self, keys: list[str]):
        self.keys = set(keys)
        self._pubsub = None
        if settings.REDIS_URL:
            try:
                self._pubsub = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).pubsub()
                self._pubsub.subscribe(channel())
            except redis.RedisError:
                self._pubsub = None

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self._pubsub is None:
                time.sleep(left)
                return
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            except redis.RedisError:
                self._pubsub = None
                continue
            if message and (ANY in self.keys or self.keys & set(message["data"].decode().split())):
                return

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
