"""kombu's Redis transport, with one kept client per channel for its synchronous commands.

kombu's Redis channel constructs a new `redis.Redis` for every publish (`_put`) and for the
bookkeeping of every delivered and acknowledged message (`QoS.append`, `QoS.ack`): in a worker's
main process that client construction was ~7 % of its CPU per task. The channel's pool was
already shared; only the client object is kept here, made from that pool once. redis-py's
clients are thread-safe, and closing the channel disconnects the pool as before.

Used for `redis://` brokers (settings.CELERY_BROKER_TRANSPORT); wake-ups themselves go out
through apps/tasks/wire.py.
"""

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis
from kombu.utils.objects import cached_property


class Channel(kombu_redis.Channel):
    @cached_property
    def _kept_client(self):
        return self._create_client()

    @contextmanager
    def conn_or_acquire(self, client=None):
        yield client or self._kept_client


class Transport(kombu_redis.Transport):
    Channel = Channel
