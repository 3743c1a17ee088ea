"""Every task state transition happens through these services, by the declared state machine
(state_machine.py, carried out by transitions.apply), and each one writes a TaskEvent.

Client/staff side: task_submit, task_submit_bulk (submission.py), task_retry, task_cancel.
Worker side: task_claim, task_report_progress, task_renew_lease, task_succeed, task_fail,
task_mark_cancelled (see executor.py).
Maintenance: dispatch_due_tasks, reap_stale_tasks, delete_old_tasks (maintenance.py, see tasks.py).
"""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.exceptions import Conflict
from apps.core.text import storable_text

from . import dispatch, fairness, metrics
from .maintenance import SWEEP_BATCH, delete_old_tasks, dispatch_due_tasks, reap_stale_tasks
from .models import Task, TaskStatus
from .retry_policy import after_failure, retry_delay
from .state_machine import (
    CANCEL,
    CLAIM,
    HARD_CANCEL,
    RENEW_LEASE,
    REPORT_PROGRESS,
    REQUEST_CANCEL,
    RETRY,
    STOP_CANCELLED,
    SUCCEED,
    Transition,
)
from .submission import TaskSpec, task_build, task_submit, task_submit_bulk
from .transitions import apply

__all__ = [
    "SWEEP_BATCH",
    "TaskSpec",
    "delete_old_tasks",
    "dispatch_due_tasks",
    "lease_expiry",
    "reap_stale_tasks",
    "retry_delay",
    "task_build",
    "task_cancel",
    "task_claim",
    "task_fail",
    "task_mark_cancelled",
    "task_renew_lease",
    "task_report_progress",
    "task_retry",
    "task_submit",
    "task_submit_bulk",
    "task_succeed",
]


# --- Client and staff actions ------------------------------------------------------------


def _status_of(task: Task) -> str:
    """The task's state now, for a refusal's message (DoesNotExist if it is gone)."""
    return Task.objects.values_list("status", flat=True).get(pk=task.pk)


def task_retry(*, task: Task, actor, reason: str = "") -> Task:
    """Run a failed or cancelled task again, with a fresh set of automatic retries."""
    with transaction.atomic():
        moved = apply(RETRY, task, actor=actor, details={"reason": f": {reason}" if reason else ""})
        if not moved:
            status = _status_of(task)
            raise Conflict(f"Only failed or cancelled tasks can be retried; this one is {status}.")
        transaction.on_commit(lambda: dispatch.publish(moved))
    return moved[0]


def task_cancel(*, task: Task, actor, reason: str = "", hard: bool = False) -> Task:
    """Cancel a waiting task at once; ask a running one to stop (or, with hard, stop it now)."""
    details = {"reason": f": {reason}" if reason else ""}
    with transaction.atomic():
        moved = apply((CANCEL, HARD_CANCEL if hard else REQUEST_CANCEL), task, actor=actor, details=details)
        if moved:
            return moved[0]
        status = _status_of(task)
        if status != TaskStatus.RUNNING:
            raise Conflict(f"A {status} task cannot be cancelled.")
    # Running and asked to stop already: nothing more to do.
    # A hard-revoked run notices at its next lease renewal that it was fenced out and
    # ends its own process (see executor.LeaseKeeper); no Celery revoke list is involved,
    # so a later retry of the same task id is never discarded by a worker.
    return Task.objects.get(pk=task.pk)


# --- Worker side --------------------------------------------------------------------------


def lease_expiry(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.TASK_LEASE_SECONDS)


def task_claim(*, task_id, worker: str, queue: str | None = None) -> Task | None:
    """Claim a due task for one run, for a wake-up that names `task_id`: the fairest claimable
    task of its queue within the concurrency limits (fairness.py), with a compare-and-set
    UPDATE; None if there is none to take (each taken, or every one at a limit).

    The returned task's owner is not loaded: `task.owner` costs a query, `owner_id` none."""
    now = timezone.now()
    values = {"run_id": uuid.uuid4(), "worker": worker, "lease_expires_at": lease_expiry(now)}
    moved = apply(CLAIM, fairness.claim_target(task_id=task_id, queue=queue), now=now, values=values)
    if not moved:
        return None
    metrics.task_started(moved[0], now=now)
    return moved[0]


def task_report_progress(*, task: Task, progress: int, message: str) -> bool:
    """Store progress and renew the lease; False when this run no longer owns the task."""
    values = {
        "progress": max(0, min(100, progress)),
        "progress_message": storable_text(message[:300]),
        "lease_expires_at": lease_expiry(timezone.now()),
    }
    return bool(apply(REPORT_PROGRESS, task, values=values))


def task_renew_lease(*, task: Task) -> bool:
    """Extend a running task's lease; False when this run no longer owns the task."""
    return bool(apply(RENEW_LEASE, task, values={"lease_expires_at": lease_expiry(timezone.now())}))


def _finish(task: Task, transition: Transition, *, now: datetime, values=None, details=None) -> bool:
    moved = apply(transition, task, now=now, values=values, details=details)
    if moved:
        transaction.on_commit(lambda: _ended(task, transition))
    return bool(moved)


def _ended(task: Task, transition: Transition) -> None:
    """After the commit of a run's end: its metrics, and a wake-up if a limit held work back."""
    metrics.task_ended(task, status=transition.to_state)
    fairness.slot_freed(task)


def task_succeed(*, task: Task, result) -> bool:
    return _finish(task, SUCCEED, now=timezone.now(), values={"result": result})


def task_mark_cancelled(*, task: Task) -> bool:
    return _finish(task, STOP_CANCELLED, now=timezone.now())


def task_fail(*, task: Task, error: str, traceback: str = "", permanent: bool = False) -> str | None:
    """Record a failed run: schedule a retry while attempts remain, else fail. Returns the new status.

    The error and traceback quote what the kind raised, which may hold NUL or lone surrogates
    (a CSV's header, say): those become U+FFFD, or the failure itself could not be recorded."""
    error, traceback = storable_text(error), storable_text(traceback)
    now = timezone.now()
    transition, values = after_failure(task, error=error, traceback=traceback, permanent=permanent, now=now)
    details = {"error_line": error.splitlines()[0] if error else ""}
    if not _finish(task, transition, now=now, values=values, details=details):
        return None
    if transition.to_state == TaskStatus.RETRYING:
        transaction.on_commit(lambda: dispatch_due_tasks(now=timezone.now(), only=[task.pk]))
    return transition.to_state
