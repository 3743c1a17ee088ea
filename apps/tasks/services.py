"""Every task state transition happens here, and each one writes a TaskEvent.

Client/staff side: task_submit, task_submit_bulk, task_retry, task_cancel.
Worker side: task_claim, task_report_progress, task_succeed, task_fail (see executor.py).
Maintenance: dispatch_due_tasks, reap_stale_tasks, delete_old_tasks (see tasks.py).
"""

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers

from apps.core.exceptions import Conflict, PayloadTooLarge

from . import dispatch
from .models import (
    CLAIMABLE_STATUSES,
    FINAL_STATUSES,
    RETRYABLE_STATUSES,
    WAITING_STATUSES,
    Task,
    TaskEvent,
    TaskPriority,
    TaskStatus,
    TaskTrigger,
)
from .registry import get_kind, kinds_for

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


def _announce_final(task: Task) -> None:
    """Record the completion webhooks of a task that just reached a final state (same transaction)."""
    from apps.webhooks.services import record_task_deliveries

    record_task_deliveries(task_id=task.pk, owner_id=task.owner_id, callback_url=task.callback_url)


def _event(task: Task, from_status: str, to_status: str, *, actor=None, message: str = "", worker: str = ""):
    return TaskEvent(
        task=task,
        from_status=from_status,
        to_status=to_status,
        actor=actor,
        message=message,
        worker=worker,
        attempt=task.attempts,
    )


# --- Submission ---------------------------------------------------------------------------


@dataclass
class TaskSpec:
    """What a client asks for; validated by the API serializer for types and ranges."""

    kind: str
    payload: dict
    title: str = ""
    description: str = ""
    priority: str = TaskPriority.NORMAL
    max_retries: int | None = None
    timeout: int | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    callback_url: str = ""


def _payload_size(payload) -> int:
    return len(json.dumps(payload, separators=(",", ":")).encode())


def task_build(*, owner, spec: TaskSpec, now: datetime) -> Task:
    """Validate a spec against its kind and return an unsaved Task. Raises ValidationError."""
    kind = get_kind(spec.kind)
    if kind is None or (kind.staff_only and not owner.is_staff):
        known = ", ".join(k.name for k in kinds_for(owner))
        raise serializers.ValidationError({"kind": [f"Unknown kind {spec.kind!r}. Known kinds: {known}."]})
    if _payload_size(spec.payload) > settings.TASK_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"The payload is larger than {settings.TASK_MAX_PAYLOAD_BYTES // 1024} KB.")
    try:
        payload = kind.validate_payload(spec.payload, owner=owner)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"payload": exc.detail}) from None

    due_later = spec.run_at is not None and spec.run_at > now + timedelta(seconds=settings.TASK_DISPATCH_LOOKAHEAD)
    return Task(
        id=uuid.uuid4(),
        owner=owner,
        kind=kind.name,
        title=spec.title or kind.name,
        description=spec.description,
        payload=payload,
        priority=spec.priority,
        queue=kind.queue,
        status=TaskStatus.PENDING if due_later else TaskStatus.QUEUED,
        max_retries=kind.max_retries if spec.max_retries is None else spec.max_retries,
        timeout=kind.timeout if spec.timeout is None else spec.timeout,
        run_at=spec.run_at,
        idempotency_key=spec.idempotency_key or None,
        callback_url=spec.callback_url,
        queued_at=None if due_later else now,
    )


def _same_request(existing: Task, candidate: Task) -> Task:
    """Idempotent replay: the same key with the same request returns the first task."""
    if existing.kind != candidate.kind or existing.payload != candidate.payload:
        raise Conflict(
            f"The idempotency key {candidate.idempotency_key!r} was already used for a different task ({existing.id})."
        )
    return existing


def _dispatch_on_commit(tasks: list[Task]) -> None:
    ready = [task for task in tasks if task.status == TaskStatus.QUEUED]
    if ready:
        transaction.on_commit(lambda: dispatch.publish(ready))


def task_submit(
    *, owner, spec: TaskSpec, trigger: str = TaskTrigger.API, schedule=None, actor=None
) -> tuple[Task, bool]:
    """Accept one task. Returns (task, created); a replayed idempotency key returns the first task."""
    now = timezone.now()
    task = task_build(owner=owner, spec=spec, now=now)
    task.trigger, task.schedule = trigger, schedule
    if task.idempotency_key:
        existing = Task.objects.filter(owner=owner, idempotency_key=task.idempotency_key).first()
        if existing:
            return _same_request(existing, task), False
    try:
        with transaction.atomic():
            task.save(force_insert=True)
            message = "Submitted" if trigger == TaskTrigger.API else f"Submitted ({TaskTrigger(trigger).label.lower()})"
            _event(task, "", task.status, actor=actor or owner, message=message).save()
            _dispatch_on_commit([task])
    except IntegrityError:
        # A concurrent request with the same idempotency key won the insert.
        existing = Task.objects.filter(owner=owner, idempotency_key=task.idempotency_key).first()
        if existing is None:
            raise
        return _same_request(existing, task), False
    return task, True


def task_submit_bulk(*, owner, specs: list[TaskSpec]) -> list[Task]:
    """Accept many tasks at once: all are validated before any is written; one insert."""
    now = timezone.now()
    tasks, errors = [], {}
    for index, spec in enumerate(specs):
        try:
            tasks.append(task_build(owner=owner, spec=spec, now=now))
        except serializers.ValidationError as exc:
            errors[str(index)] = exc.detail
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"tasks[{index}]: {exc.detail}") from None
    if errors:
        raise serializers.ValidationError({"tasks": errors})

    keys = [task.idempotency_key for task in tasks if task.idempotency_key]
    if len(keys) != len(set(keys)):
        raise serializers.ValidationError({"tasks": ["Idempotency keys must be unique within one request."]})
    existing = {t.idempotency_key: t for t in Task.objects.filter(owner=owner, idempotency_key__in=keys)}
    result, new = [], []
    for task in tasks:
        if task.idempotency_key in existing:
            result.append(_same_request(existing[task.idempotency_key], task))
        else:
            result.append(task)
            new.append(task)
    try:
        with transaction.atomic():
            Task.objects.bulk_create(new)
            TaskEvent.objects.bulk_create(
                [_event(task, "", task.status, actor=owner, message="Submitted (bulk)") for task in new]
            )
            _dispatch_on_commit(new)
    except IntegrityError:
        raise Conflict("A concurrent request used one of these idempotency keys; submit again.") from None
    return result


# --- Client and staff actions ------------------------------------------------------------


def _locked(task: Task) -> Task:
    return Task.objects.select_for_update().get(pk=task.pk)


def task_retry(*, task: Task, actor, reason: str = "") -> Task:
    """Run a failed or cancelled task again, with a fresh set of automatic retries."""
    now = timezone.now()
    with transaction.atomic():
        task = _locked(task)
        if task.status not in RETRYABLE_STATUSES:
            raise Conflict(f"Only failed or cancelled tasks can be retried; this one is {task.status}.")
        from_status = task.status
        task.status = TaskStatus.QUEUED
        task.attempts = 0
        task.progress, task.progress_message = 0, ""
        task.result, task.error, task.traceback = None, "", ""
        task.cancel_requested = False
        task.run_id = None
        task.run_at = None
        task.queued_at = now
        task.started_at = task.finished_at = task.lease_expires_at = None
        task.save()
        message = "Retried by hand" + (f": {reason}" if reason else "")
        _event(task, from_status, task.status, actor=actor, message=message).save()
        _dispatch_on_commit([task])
    return task


def task_cancel(*, task: Task, actor, reason: str = "", hard: bool = False) -> Task:
    """Cancel a waiting task at once; ask a running one to stop (or, with hard, stop it now)."""
    now = timezone.now()
    suffix = f": {reason}" if reason else ""
    with transaction.atomic():
        task = _locked(task)
        from_status = task.status
        if task.status in WAITING_STATUSES or (hard and task.status == TaskStatus.RUNNING):
            task.status = TaskStatus.CANCELLED
            task.finished_at = now
            task.lease_expires_at = None
            task.run_id = None  # fences out a run that is still going (hard revoke)
            task.save()
            verb = "Hard-revoked" if from_status == TaskStatus.RUNNING else "Cancelled"
            _event(task, from_status, task.status, actor=actor, message=verb + suffix).save()
            _announce_final(task)
        elif task.status == TaskStatus.RUNNING:
            if not task.cancel_requested:
                task.cancel_requested = True
                task.save(update_fields=["cancel_requested", "updated_at"])
                _event(task, from_status, from_status, actor=actor, message="Cancel requested" + suffix).save()
        else:
            raise Conflict(f"A {task.status} task cannot be cancelled.")
    # A hard-revoked run notices at its next lease renewal that it was fenced out and
    # ends its own process (see executor.LeaseKeeper); no Celery revoke list is involved,
    # so a later retry of the same task id is never discarded by a worker.
    return task


# --- Worker side --------------------------------------------------------------------------


def lease_expiry(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.TASK_LEASE_SECONDS)


def task_claim(*, task_id, worker: str) -> Task | None:
    """Claim a due task for one run with a compare-and-set UPDATE; None if someone else has it."""
    task = Task.objects.select_related("owner").filter(pk=task_id).first()
    if task is None or task.status not in CLAIMABLE_STATUSES:
        return None
    now = timezone.now()
    if task.run_at and task.run_at > now + timedelta(seconds=1):
        return None  # an early message; the dispatcher publishes again when due
    run_id = uuid.uuid4()
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task.pk, status=task.status, attempts=task.attempts, run_id=task.run_id
        ).update(
            status=TaskStatus.RUNNING,
            attempts=task.attempts + 1,
            run_id=run_id,
            worker=worker,
            started_at=now,
            lease_expires_at=lease_expiry(now),
            progress=0,
            progress_message="",
            updated_at=now,
        )
        if not claimed:
            return None
        from_status = task.status
        task.status, task.attempts, task.run_id, task.worker = TaskStatus.RUNNING, task.attempts + 1, run_id, worker
        task.started_at = now
        _event(task, from_status, TaskStatus.RUNNING, worker=worker, message=f"Attempt {task.attempts}").save()
    return task


def task_report_progress(*, task: Task, progress: int, message: str) -> bool:
    """Store progress and renew the lease; False when this run no longer owns the task."""
    now = timezone.now()
    return bool(
        Task.objects.filter(pk=task.pk, run_id=task.run_id, status=TaskStatus.RUNNING).update(
            progress=max(0, min(100, progress)),
            progress_message=message[:300],
            lease_expires_at=lease_expiry(now),
            updated_at=now,
        )
    )


def task_renew_lease(*, task: Task) -> bool:
    """Extend a running task's lease; False when this run no longer owns the task."""
    return bool(
        Task.objects.filter(pk=task.pk, run_id=task.run_id, status=TaskStatus.RUNNING).update(
            lease_expires_at=lease_expiry(timezone.now())
        )
    )


def _finish(task: Task, *, to_status: str, message: str, fields: dict) -> bool:
    now = timezone.now()
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, run_id=task.run_id, status=TaskStatus.RUNNING).update(
            status=to_status, lease_expires_at=None, updated_at=now, **fields
        )
        if done:
            _event(task, TaskStatus.RUNNING, to_status, worker=task.worker, message=message).save()
            _announce_final(task)
    return bool(done)


def task_succeed(*, task: Task, result) -> bool:
    return _finish(
        task,
        to_status=TaskStatus.SUCCEEDED,
        message="Succeeded",
        fields={"result": result, "progress": 100, "finished_at": timezone.now(), "error": "", "traceback": ""},
    )


def task_mark_cancelled(*, task: Task) -> bool:
    return _finish(
        task,
        to_status=TaskStatus.CANCELLED,
        message="Stopped after a cancel request",
        fields={"finished_at": timezone.now()},
    )


def retry_delay(*, attempt: int, backoff: float, backoff_max: float) -> float:
    """Exponential backoff with equal jitter: between half and all of min(backoff·2^(n-1), max)."""
    cap = min(backoff * 2 ** max(attempt - 1, 0), backoff_max)
    return cap / 2 + random.uniform(0, cap / 2)


def _failure_fields(task: Task, *, error: str, traceback: str, permanent: bool, now: datetime) -> tuple[str, dict]:
    kind = get_kind(task.kind)
    error = error[:5000]
    if not permanent and kind is not None and task.attempts <= task.max_retries:
        delay = retry_delay(attempt=task.attempts, backoff=kind.retry_backoff, backoff_max=kind.retry_backoff_max)
        return TaskStatus.RETRYING, {
            "error": error,
            "traceback": traceback,
            "run_at": now + timedelta(seconds=delay),
            "queued_at": None,
            "run_id": None,
        }
    return TaskStatus.FAILED, {"error": error, "traceback": traceback, "finished_at": now}


def task_fail(*, task: Task, error: str, traceback: str = "", permanent: bool = False) -> str | None:
    """Record a failed run: schedule a retry while attempts remain, else fail. Returns the new status."""
    now = timezone.now()
    to_status, fields = _failure_fields(task, error=error, traceback=traceback, permanent=permanent, now=now)
    message = f"Attempt {task.attempts} failed: {error.splitlines()[0] if error else ''}"[:500]
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, run_id=task.run_id, status=TaskStatus.RUNNING).update(
            status=to_status, lease_expires_at=None, updated_at=now, **fields
        )
        if not done:
            return None
        _event(task, TaskStatus.RUNNING, to_status, worker=task.worker, message=message).save()
        if to_status == TaskStatus.FAILED:
            _announce_final(task)
        if to_status == TaskStatus.RETRYING:
            transaction.on_commit(lambda: dispatch_due_tasks(now=timezone.now(), only=[task.pk]))
    return to_status


# --- Maintenance --------------------------------------------------------------------------


def dispatch_due_tasks(*, now: datetime, only: list | None = None) -> int:
    """Publish wake-ups for pending and retrying tasks that fall due within the look-ahead.

    Long waits stay in PostgreSQL: a far-future ETA message in Redis would be re-delivered
    after the visibility timeout and held in worker memory meanwhile.
    """
    horizon = now + timedelta(seconds=settings.TASK_DISPATCH_LOOKAHEAD)
    with transaction.atomic():
        due = Task.objects.select_for_update(skip_locked=True).filter(
            status__in=[TaskStatus.PENDING, TaskStatus.RETRYING], queued_at__isnull=True, run_at__lte=horizon
        )
        if only is not None:
            due = due.filter(pk__in=only)
        tasks = list(due.order_by("run_at")[:SWEEP_BATCH])
        events = []
        for task in tasks:
            if task.status == TaskStatus.PENDING:
                events.append(_event(task, TaskStatus.PENDING, TaskStatus.QUEUED, message="Due: queued"))
                task.status = TaskStatus.QUEUED
            task.queued_at = now
        Task.objects.bulk_update(tasks, ["status", "queued_at"])
        TaskEvent.objects.bulk_create(events)
        if tasks:
            transaction.on_commit(lambda: dispatch.publish(tasks))
    return len(tasks)


def _reap_expired_leases(now: datetime) -> int:
    with transaction.atomic():
        lost = list(
            Task.objects.select_for_update(skip_locked=True).filter(
                status=TaskStatus.RUNNING, lease_expires_at__lt=now
            )[:SWEEP_BATCH]
        )
        events = []
        for task in lost:
            error = (
                f"WorkerLost: the worker running attempt {task.attempts} ({task.worker or 'unknown'}) "
                "stopped renewing its lease; the process died or lost its database connection."
            )
            to_status, fields = _failure_fields(task, error=error, traceback="", permanent=False, now=now)
            for name, value in fields.items():
                setattr(task, name, value)
            task.status, task.lease_expires_at = to_status, None
            events.append(_event(task, TaskStatus.RUNNING, to_status, message=error))
        Task.objects.bulk_update(
            lost, ["status", "lease_expires_at", "error", "traceback", "run_at", "queued_at", "run_id", "finished_at"]
        )
        TaskEvent.objects.bulk_create(events)
        for task in lost:
            if task.status == TaskStatus.FAILED:
                _announce_final(task)
    return len(lost)


def _redispatch_lost_wakeups(now: datetime) -> int:
    """Publish again for tasks that waited past the grace period without being claimed.

    A queue whose broker depth covers every such task is left alone: its messages are
    just waiting behind a backlog. A smaller depth means messages were lost (Redis flushed
    or restarted, a publish that failed after commit), and the whole stale set is published
    again; duplicates are harmless because a run needs the database claim.
    """
    cutoff = now - timedelta(seconds=settings.TASK_REDISPATCH_AFTER)
    stale = Task.objects.filter(
        Q(run_at__isnull=True) | Q(run_at__lt=cutoff),
        status__in=CLAIMABLE_STATUSES,
        queued_at__lt=cutoff,
    )
    republished = 0
    for queue in stale.values_list("queue", flat=True).distinct():
        with transaction.atomic():
            tasks = list(stale.filter(queue=queue).select_for_update(skip_locked=True)[:SWEEP_BATCH])
            depth = dispatch.queue_depth(queue)
            if not tasks or (depth is not None and depth >= len(tasks)):
                continue
            for task in tasks:
                task.queued_at = now
            Task.objects.bulk_update(tasks, ["queued_at"])
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
