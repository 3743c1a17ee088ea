"""Wake-ups on the broker. Publishing is best effort: a lost or failed publish is repaired by
the reaper, because the task row in the database is what counts."""

import contextlib
import itertools
import json
import logging
from collections.abc import Iterable
from operator import attrgetter

import structlog
from celery import current_app as celery_app
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.exceptions import RedisError

from . import wire
from .models import CELERY_PRIORITY

# Seconds a broker health check (queue depth) waits for a connection.
BROKER_TIMEOUT = 2

logger = logging.getLogger(__name__)

RUN_TASK = "taskflow.run_task"
# Seconds between the soft time limit (the kind gets an exception) and the hard kill.
HARD_LIMIT_GRACE = 15


def wake_up_hard_limit() -> int:
    """The time limit every wake-up carries: the longest any run may take. A wake-up may claim
    another task than the one it names (fairness.py), so a run's own limits are armed by the
    run (executor.run_limits), and the message's only backstops them."""
    return settings.TASK_MAX_TIMEOUT + HARD_LIMIT_GRACE


# Wake-ups buffered before one round trip to the broker.
PUBLISH_BATCH = 500


def publish(tasks: Iterable) -> int:
    """Publish one wake-up per task. Never raises; returns how many went out (0 when the broker
    failed: a failed batch may have sent part of them)."""
    tasks = list(tasks)
    if not tasks:
        return 0
    now = timezone.now()
    try:
        if wire.applies():
            later = [task for task in tasks if task.run_at and task.run_at > now]
            sent = _push(wire.wire(RUN_TASK), [task for task in tasks if not (task.run_at and task.run_at > now)])
            return sent + (_send_with_celery(later, now) if later else 0)
        return _send_with_celery(tasks, now)
    except (BrokerUnavailable, OSError, RedisError) as exc:
        # (A batch flushes outside Celery's publish retries: redis-py's own errors then.)
        # An unreachable broker is an expected condition, not a bug: one line, no traceback
        # (rendering one cost seconds per request while Redis was down). The rows stay
        # queued; the reaper publishes again after TASK_REDISPATCH_AFTER.
        wire.reset()
        logger.warning(
            "publishing %d wake-up(s) failed: broker unreachable (%s); the reaper will retry", len(tasks), exc
        )
    except Exception:
        wire.reset()
        logger.exception("publishing %d wake-up(s) failed; the reaper will retry", len(tasks))
    return 0


def _log_context(kind: str) -> str:
    """django-structlog's header, as its before_task_publish receiver fills it: the bound log
    context (the submitting request's id...), and the kind, so that the worker's log lines
    carry both from the start."""
    context = structlog.contextvars.get_contextvars()
    if "task_id" in context:
        context["parent_task_id"] = context.pop("task_id")
    context["task_kind"] = kind
    return json.dumps(context, default=str)


def _push(line: wire.Wire, tasks: list) -> int:
    """Due wake-ups straight onto Redis: each a prebuilt message of its kind's queue, priority
    and time limits with the task's id filled in, over the process's kept client; many in
    pipelines of PUBLISH_BATCH. A batch that fails is discarded whole: the reaper publishes
    its tasks again, as for any lost wake-up."""
    messages = []
    for kind, same_kind in itertools.groupby(tasks, key=attrgetter("kind")):
        context = _log_context(kind)
        for task in same_kind:
            template = line.template(
                queue=task.queue, priority=CELERY_PRIORITY.get(task.priority, 6), hard_limit=wake_up_hard_limit()
            )
            messages.append((template.key, template.message(str(task.id), context)))
    line.push(messages, PUBLISH_BATCH)
    return len(messages)


def _send_with_celery(tasks: list, now) -> int:
    """Wake-ups through Celery's own publishing: ETA wake-ups, and brokers other than Redis
    (the embedded filesystem broker)."""
    sent = 0
    # Several wake-ups go in one Redis pipeline per PUBLISH_BATCH messages instead of a
    # round trip each (kombu's publish batch; transports without it, like the embedded
    # filesystem broker, publish one by one). A single wake-up skips the batch, whose set-up
    # costs more than it saves for one message.
    with (
        celery_app.producer_or_acquire() as producer,
        producer.batch(max_size=PUBLISH_BATCH) if len(tasks) > 1 else contextlib.nullcontext(),
    ):
        # django-structlog copies the bound context into the message: the worker's log
        # lines then carry the kind (and the submitting request's id) from the start.
        for kind, same_kind in itertools.groupby(tasks, key=attrgetter("kind")):
            with structlog.contextvars.bound_contextvars(task_kind=kind):
                for task in same_kind:
                    celery_app.send_task(
                        RUN_TASK,
                        args=[str(task.id)],
                        task_id=str(task.id),
                        queue=task.queue,
                        priority=CELERY_PRIORITY.get(task.priority, 6),
                        eta=task.run_at if task.run_at and task.run_at > now else None,
                        time_limit=wake_up_hard_limit(),
                        producer=producer,
                    )
                    sent += 1
    return sent


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue, or None when the broker cannot tell."""
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception as exc:
        # A queue that was never declared (e.g. after FLUSHALL) has no messages at all.
        if "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower():
            return 0
        logger.warning("could not read the depth of queue %s: %s", queue, exc)
        return None
