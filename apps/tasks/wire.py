"""Wake-up messages written straight to a Redis broker: prebuilt per kind, one kept client per process.

Publishing through Celery (`send_task`) costs, per message, the protocol's header building,
two signals, kombu's message object, its JSON and base64 encoding, and a new `redis.Redis`
client that kombu's Redis transport constructs for every publish. TaskFlow's wake-ups differ
only in the task id: the rest of the message is the same for every task of one queue,
priority and time limit. So each such message is built once by Celery's own protocol code
(`app.amqp.create_task_message`), wrapped as kombu's Redis transport wraps it, and kept as a
JSON template; a wake-up fills in the task's id, its body and a fresh delivery tag, and is
LPUSHed on a Redis client kept for the life of the process, to the list that kombu itself
would pick (its own priority-to-key rule). Celery workers consume it like any other message
(apps/tasks/tests/test_wire.py compares it with what `send_task` writes, and runs it).

Only the plain case is taken here: a Redis broker (without TLS or a global key prefix) and a
wake-up due now. An ETA wake-up, or another broker (the embedded filesystem one), goes
through `send_task` (dispatch.py).
"""

import base64
import contextlib
import json
import os
import threading
import uuid
from bisect import bisect
from dataclasses import dataclass

import redis
from celery import current_app as celery_app
from celery.utils.nodenames import anon_nodename
from redis.backoff import NoBackoff
from redis.retry import Retry

# Stand-ins in the template, replaced per message. None of them can occur in a task id (a
# UUID), a base64 body or a UUID delivery tag; the structlog context is put in last of all,
# so whatever a request id holds is never taken for one of them.
_ID = "@@taskflow-task-id@@"
_BODY = "@@taskflow-body@@"
_TAG = "@@taskflow-delivery-tag@@"
_CONTEXT = "@@taskflow-log-context@@"
# Seconds a publish waits on the broker's socket, unless the transport options say otherwise.
BROKER_SOCKET_TIMEOUT = 5
# The message body (args, kwargs, embed) of a wake-up, as Celery's JSON serializer writes it.
_BODY_HEAD = '[["'
_BODY_TAIL = '"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


@dataclass(frozen=True)
class Template:
    key: str  # the Redis list the message goes to
    text: str  # the message as JSON, with the stand-ins

    def message(self, task_id: str, context_json: str) -> str:
        body = base64.b64encode(f"{_BODY_HEAD}{task_id}{_BODY_TAIL}".encode()).decode()
        return (
            self.text.replace(_ID, task_id)
            .replace(_BODY, body)
            .replace(_TAG, str(uuid.uuid4()))
            .replace(f'"{_CONTEXT}"', context_json)
        )


class Wire:
    """A process's Redis client for the broker, and its message templates."""

    def __init__(self, app, name: str, url: str):
        self.app = app
        self.name = name
        self.url = url
        self.pid = os.getpid()
        self._templates: dict[tuple, Template] = {}
        self._lock = threading.Lock()
        # kombu's Redis channel decides the list of a priority (its class attributes, unless
        # the transport options override them). Read without connecting: a channel connects.
        with app.connection_for_write() as connection:
            channel_class = connection.transport.Channel
        options = app.conf.broker_transport_options or {}
        self._steps = sorted(options.get("priority_steps", channel_class.priority_steps))
        self._sep = options.get("sep", channel_class.sep)
        self._priority_bounds = (channel_class.min_priority, channel_class.max_priority)
        # Bounded waits: a broker that does not answer costs a request seconds, not forever
        # (the wake-up is then left to the reaper). One retry on a fresh connection covers a
        # kept connection that Redis closed (a restart, an idle timeout).
        timeout = options.get("socket_timeout") or BROKER_SOCKET_TIMEOUT
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=options.get("socket_connect_timeout") or timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self.origin = anon_nodename()

    def key(self, queue: str, priority: int) -> str:
        """The list kombu's Redis transport pushes a message of this priority to."""
        low, high = self._priority_bounds
        step = self._steps[bisect(self._steps, max(min(int(priority), high), low)) - 1]
        return f"{queue}{self._sep}{step}" if step else queue

    def template(self, *, queue: str, priority: int, hard_limit: int) -> Template:
        key = (queue, priority, hard_limit)
        found = self._templates.get(key)
        if found is None:
            with self._lock:
                found = self._templates.setdefault(key, self._build(queue, priority, hard_limit))
        return found

    def _build(self, queue: str, priority: int, hard_limit: int) -> Template:
        headers, properties, _body, _sent = self.app.amqp.create_task_message(
            _ID,
            self.name,
            [_ID],
            {},
            time_limit=hard_limit,
            origin=self.origin,
            reply_to=self.app.thread_oid,
            ignore_result=None,
        )
        headers["argsrepr"] = f"['{_ID}']"
        headers["__django_structlog__"] = _CONTEXT  # django-structlog's header (see dispatch.py)
        properties.update(
            delivery_mode=2,
            delivery_info={"exchange": "", "routing_key": queue},
            priority=priority,
            body_encoding="base64",
            delivery_tag=_TAG,
        )
        message = {
            "body": _BODY,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return Template(key=self.key(queue, priority), text=json.dumps(message))

    def push(self, messages: list[tuple[str, str]], batch: int) -> None:
        """LPUSH each (key, message); several in one pipeline round trip per `batch` messages."""
        if len(messages) == 1:
            self.client.lpush(*messages[0])
            return
        with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(messages), batch):
                for key, message in messages[start : start + batch]:
                    pipe.lpush(key, message)
                pipe.execute()

    def close(self) -> None:
        self.client.connection_pool.disconnect()


_wire: Wire | None = None
_wire_lock = threading.Lock()


def _broker_url() -> str:
    conf = celery_app.conf
    return conf.broker_write_url or conf.broker_url or ""


def applies() -> bool:
    """True when wake-ups can go straight to the broker: Redis without TLS, without a global
    key prefix, and no `task-sent` monitoring events wanted (Celery sends those from send_task)."""
    conf = celery_app.conf
    options = conf.broker_transport_options or {}
    return (
        _broker_url().startswith("redis://")  # (rediss: Celery's broker_use_ssl options stay with kombu)
        and not options.get("global_keyprefix")
        and not conf.task_send_sent_event
    )


def _usable(current: Wire | None, url: str) -> bool:
    return current is not None and current.pid == os.getpid() and current.url == url


def wire(name: str) -> Wire:
    """This process's Wire, made on first use, and again in a forked child, after reset() or
    when the app's broker changed."""
    global _wire
    current, url = _wire, _broker_url()
    if not _usable(current, url):
        with _wire_lock:
            if not _usable(_wire, url):
                stale, _wire = _wire, Wire(celery_app, name, url)
                if stale is not None and stale.pid == os.getpid():
                    stale.close()
            current = _wire
    return current


def reset() -> None:
    """Forget the kept client (after a broker error: the next publish starts afresh)."""
    global _wire
    with _wire_lock:
        current, _wire = _wire, None
    if current is not None and current.pid == os.getpid():
        # Closing a broken connection may fail too; it is dropped anyway.
        with contextlib.suppress(Exception):
            current.close()
