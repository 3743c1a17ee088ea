"""Wake-ups on the broker. Publishing is best effort: a lost or failed publish is repaired by
the reaper, because the task row in the database is what counts."""

import itertools
import logging
from collections.abc import Iterable
from operator import attrgetter

import structlog
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from taskflow_site.celery import app as celery_app

from .models import CELERY_PRIORITY

logger = logging.getLogger(__name__)

RUN_TASK = "taskflow.run_task"
# Seconds between the soft time limit (the kind gets an exception) and the hard kill.
HARD_LIMIT_GRACE = 15


def publish(tasks: Iterable) -> int:
    """Publish one wake-up per task over a single producer connection. Never raises."""
    tasks = list(tasks)
    now = timezone.now()
    sent = 0
    try:
        with celery_app.producer_or_acquire() as producer:
            # django-structlog copies the bound context into the message: the worker's log
            # lines then carry the kind (and the submitting request's id) from the start.
            # Bound once per run of same-kind tasks (a bulk submission is usually one kind):
            # binding per message cost as much as a twentieth of a bulk request.
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
                            soft_time_limit=task.timeout,
                            time_limit=task.timeout + HARD_LIMIT_GRACE,
                            producer=producer,
                        )
                        sent += 1
    except (BrokerUnavailable, OSError) as exc:
        # An unreachable broker is an expected condition, not a bug: one line, no traceback
        # (rendering one cost seconds per request while Redis was down). The rows stay
        # queued; the reaper publishes again after TASK_REDISPATCH_AFTER.
        logger.warning(
            "publishing %d wake-up(s) failed after %d: broker unreachable (%s); the reaper will retry",
            len(tasks),
            sent,
            exc,
        )
    except Exception:
        logger.exception("publishing %d wake-up(s) failed after %d; the reaper will retry", len(tasks), sent)
    return sent


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue, or None when the broker cannot tell."""
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.TASK_BROKER_TIMEOUT)
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception as exc:
        # A queue that was never declared (e.g. after FLUSHALL) has no messages at all.
        if "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower():
            return 0
        logger.warning("could not read the depth of queue %s: %s", queue, exc)
        return None
