"""The periodic sweeps: wake-ups that fall due, runs whose worker was lost, wake-ups the broker
lost, and the retention of finished tasks. Each moves tasks only through transitions.apply."""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from . import dispatch, fairness, metrics
from .models import FINAL_STATUSES, Task, TaskEvent
from .retry_policy import after_failure
from .state_machine import DISPATCH, REAP_TO_FAILED, REAP_TO_RETRY, REDISPATCH, WAKE
from .transitions import apply, database_restarted_within_grace

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


def dispatch_due_tasks(*, now: datetime, only: list | None = None) -> int:
    """Publish wake-ups for pending and retrying tasks that fall due within the look-ahead.

    Long waits stay in PostgreSQL: a far-future ETA message in Redis would be re-delivered
    after the visibility timeout and held in worker memory meanwhile.
    """
    candidates = Task.objects.all() if only is None else Task.objects.filter(pk__in=only)
    with transaction.atomic():
        tasks = apply((DISPATCH, WAKE), candidates, now=now, order_by=["run_at"], limit=SWEEP_BATCH, skip_locked=True)
        if tasks:
            transaction.on_commit(lambda: dispatch.publish(tasks))
    return len(tasks)


def _lost_run(task: Task, now: datetime):
    error = (
        f"WorkerLost: the worker running attempt {task.attempts} ({task.worker or 'unknown'}) "
        "stopped renewing its lease; the process died or lost its database connection."
    )
    transition, values = after_failure(task, error=error, traceback="", permanent=False, now=now, reaped=True)
    return transition, values, {"error": error}


def _reap_expired_leases(now: datetime) -> int:
    with transaction.atomic():
        lost = apply(
            (REAP_TO_RETRY, REAP_TO_FAILED),
            Task.objects.all(),
            now=now,
            plan=lambda task: _lost_run(task, now),
            limit=SWEEP_BATCH,
            skip_locked=True,
        )
        transaction.on_commit(lambda: _runs_lost(lost))
    return len(lost)


def _runs_lost(lost: list[Task]) -> None:
    metrics.runs_lost(lost)
    for task in lost:  # a lost run's slot is free again: wake what a limit held back
        fairness.slot_freed(task)


def _redispatch_lost_wakeups(now: datetime) -> int:
    """Publish again for tasks that waited past the grace period without being claimed.

    A queue whose broker depth covers every such task is left alone: its messages are
    just waiting behind a backlog. A smaller depth means messages were lost (Redis flushed
    or restarted, a publish that failed after commit): as many of the oldest stale tasks as
    are missing from the broker are published again (all of them when the depth is
    unknown). Messages that workers hold are not in the depth either, so this may publish
    a few duplicates; they are harmless because a run needs the database claim. Publishing
    the whole stale set instead doubled the broker's work during every backlog.

    Not for a lease after PostgreSQL started: a claim it lost in a crash may have a run still
    going, which its next lease renewal ends (transitions.restart_grace).
    """
    if database_restarted_within_grace():
        logger.info("PostgreSQL started less than a lease ago: no re-dispatch yet")
        return 0
    stale = Task.objects.filter(REDISPATCH.guard(now), status__in=REDISPATCH.from_states)
    republished = 0
    # order_by(): without it the model's ordering joins the DISTINCT, one "queue" per task.
    for queue in stale.order_by().values_list("queue", flat=True).distinct():
        with transaction.atomic():
            # Locked first, then trimmed to what the broker lacks, then moved (by id: the
            # locks are this transaction's already).
            batch = stale.filter(queue=queue).order_by("queued_at").select_for_update(skip_locked=True)
            ids = list(batch.values_list("pk", flat=True)[:SWEEP_BATCH])
            depth = dispatch.queue_depth(queue)
            if depth is not None:
                ids = ids[: max(len(ids) - depth, 0)]
            if not ids:
                continue
            tasks = apply(REDISPATCH, ids, now=now)
            transaction.on_commit(lambda tasks=tasks: dispatch.publish(tasks))
            republished += len(tasks)
            logger.warning("re-dispatching %d task(s) of queue %s (broker depth %s)", len(tasks), queue, depth)
    return republished


def reap_stale_tasks(*, now: datetime | None = None) -> dict[str, int]:
    """Recover from lost workers and lost broker messages; safe to run concurrently."""
    now = now or timezone.now()
    return {
        "lost_runs": _reap_expired_leases(now),
        "redispatched": _redispatch_lost_wakeups(now),
        "due": dispatch_due_tasks(now=now),
    }


def delete_old_tasks(*, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete finished tasks (and their events) older than the retention, in small batches."""
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(
            Task.objects.filter(status__in=FINAL_STATUSES, finished_at__lt=cutoff)
            .order_by()
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        with transaction.atomic():
            TaskEvent.objects.filter(task_id__in=ids).delete()
            deleted += Task.objects.filter(id__in=ids).delete()[1].get("tasks.Task", 0)
