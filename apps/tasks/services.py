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
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.sql import InsertQuery, UpdateQuery
from django.utils import timezone
from rest_framework import serializers

from apps.core import metrics
from apps.core.exceptions import Conflict, PayloadTooLarge

from . import dispatch
from .models import (
    CLAIMABLE_STATUSES,
    FINAL_STATUSES,
    RETRYABLE_STATUSES,
    WAITING_STATUSES,
    Task,
    TaskEvent,
    TaskFile,
    TaskFileRole,
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


def _with_event(cte_sql: str, cte_params: list, event: TaskEvent) -> bool:
    """Run a data-modifying statement on one task row (`cte_sql`, ending in RETURNING 1)
    and INSERT `event` only if it touched the row: one statement, so atomic without a
    transaction, and one round trip where BEGIN, the statement, the INSERT and COMMIT took
    four. On a busy database those round trips are most of a submission's and of a worker's
    time per task. Returns whether the row was touched."""
    fields = [field for field in TaskEvent._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    event_params = [field.get_db_prep_save(field.pre_save(event, add=True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH touched AS ({cte_sql}) "
            f"INSERT INTO {connection.ops.quote_name(TaskEvent._meta.db_table)} ({columns}) "
            f"SELECT {', '.join(['%s'] * len(fields))} FROM touched",
            [*cte_params, *event_params],
        )
        return cursor.rowcount == 1


def _one_statement() -> bool:
    # SQLite (the embedded mode) has no data-modifying CTEs: there, a transaction as usual.
    return connection.vendor == "postgresql"


def _insert_with_event(*, task: Task, event: TaskEvent) -> None:
    """INSERT a new task and its first event in one statement (see _with_event)."""
    if not _one_statement():
        with transaction.atomic():
            task.save(force_insert=True)
            event.save()
        return
    query = InsertQuery(Task)
    query.insert_values(Task._meta.local_concrete_fields, [task])
    [(insert_sql, insert_params)] = query.get_compiler(connection=connection).as_sql()
    _with_event(f"{insert_sql} RETURNING 1", list(insert_params), event)
    task._state.adding, task._state.db = False, connection.alias


def _update_with_event(*, task_id, where: dict, values: dict, event: TaskEvent) -> bool:
    """UPDATE one task row where `where` holds and, only if it matched, INSERT `event`, in
    one statement (see _with_event). A worker makes two transitions per run, claim and finish."""
    if not _one_statement():
        with transaction.atomic():
            touched = Task.objects.filter(pk=task_id, **where).update(**values)
            if touched:
                event.save()
        return bool(touched)
    update = Task.objects.filter(pk=task_id, **where).query.chain(UpdateQuery)
    update.add_update_values(values)
    update_sql, update_params = update.get_compiler(connection=connection).as_sql()
    return _with_event(f"{update_sql} RETURNING 1", list(update_params), event)


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
        payload, input_files = kind.validate_payload(spec.payload, owner=owner)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"payload": exc.detail}) from None

    due_later = spec.run_at is not None and spec.run_at > now + timedelta(seconds=settings.TASK_DISPATCH_LOOKAHEAD)
    task = Task(
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
    # Not a field: the files the payload names, linked as inputs once the task is saved.
    task.input_files = input_files
    return task


def _link_inputs(tasks: list[Task]) -> None:
    links = [
        TaskFile(task=task, file=stored_file, role=TaskFileRole.INPUT)
        for task in tasks
        for stored_file in {f.pk: f for f in getattr(task, "input_files", [])}.values()
    ]
    TaskFile.objects.bulk_create(links)


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
    message = "Submitted" if trigger == TaskTrigger.API else f"Submitted ({TaskTrigger(trigger).label.lower()})"
    event = _event(task, "", task.status, actor=actor or owner, message=message)
    try:
        if task.input_files or connection.in_atomic_block:
            # Input files to link, or a caller's transaction (a savepoint keeps it usable
            # after an IntegrityError): the general path.
            with transaction.atomic():
                task.save(force_insert=True)
                _link_inputs([task])
                event.save()
                _dispatch_on_commit([task])
        else:
            _insert_with_event(task=task, event=event)
            _dispatch_on_commit([task])  # committed already: publishes now
    except IntegrityError:
        # A concurrent request with the same idempotency key won the insert.
        existing = Task.objects.filter(owner=owner, idempotency_key=task.idempotency_key).first()
        if existing is None:
            raise
        return _same_request(existing, task), False
    metrics.tasks_submitted([task])
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
            _link_inputs(new)
            TaskEvent.objects.bulk_create(
                [_event(task, "", task.status, actor=owner, message="Submitted (bulk)") for task in new]
            )
            _dispatch_on_commit(new)
    except IntegrityError:
        raise Conflict("A concurrent request used one of these idempotency keys; submit again.") from None
    metrics.tasks_submitted(new)
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
    # order_by(): a primary-key lookup needs no Meta.ordering (-created_at, -id), whose
    # compiling and planning cost a worker more than the lookup itself, once per task.
    task = Task.objects.select_related("owner").filter(pk=task_id).order_by().first()
    if task is None or task.status not in CLAIMABLE_STATUSES:
        return None
    now = timezone.now()
    if task.run_at and task.run_at > now + timedelta(seconds=1):
        return None  # an early message; the dispatcher publishes again when due
    run_id = uuid.uuid4()
    from_status, attempt = task.status, task.attempts + 1
    event = TaskEvent(
        task=task,
        from_status=from_status,
        to_status=TaskStatus.RUNNING,
        worker=worker,
        message=f"Attempt {attempt}",
        attempt=attempt,
    )
    claimed = _update_with_event(
        task_id=task.pk,
        where={"status": task.status, "attempts": task.attempts, "run_id": task.run_id},
        values={
            "status": TaskStatus.RUNNING,
            "attempts": attempt,
            "run_id": run_id,
            "worker": worker,
            "started_at": now,
            "lease_expires_at": lease_expiry(now),
            "progress": 0,
            "progress_message": "",
            "updated_at": now,
        },
        event=event,
    )
    if not claimed:
        return None
    task.status, task.attempts, task.run_id, task.worker = TaskStatus.RUNNING, attempt, run_id, worker
    task.started_at = now
    metrics.task_started(task, now=now)
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
    from apps.webhooks.services import owner_has_endpoints

    now = timezone.now()

    def transition() -> bool:
        return _update_with_event(
            task_id=task.pk,
            where={"run_id": task.run_id, "status": TaskStatus.RUNNING},
            values={"status": to_status, "lease_expires_at": None, "updated_at": now, **fields},
            event=_event(task, TaskStatus.RUNNING, to_status, worker=task.worker, message=message),
        )

    # Webhook deliveries are recorded in the transaction that finishes the task; without
    # any to record (the usual case) the transition is one statement, no transaction needed.
    if task.callback_url or owner_has_endpoints(task.owner_id):
        with transaction.atomic():
            done = transition()
            if done:
                _announce_final(task)
    else:
        done = transition()
    if done:
        transaction.on_commit(lambda: metrics.task_ended(task, status=to_status))
    return done


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
        transaction.on_commit(lambda: metrics.task_ended(task, status=to_status))
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
            task.queued_at = task.updated_at = now
        Task.objects.bulk_update(tasks, ["status", "queued_at", "updated_at"])
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
            task.status, task.lease_expires_at, task.updated_at = to_status, None, now
            events.append(_event(task, TaskStatus.RUNNING, to_status, message=error))
        Task.objects.bulk_update(
            lost,
            [
                "status",
                "lease_expires_at",
                "error",
                "traceback",
                "run_at",
                "queued_at",
                "run_id",
                "finished_at",
                "updated_at",
            ],
        )
        TaskEvent.objects.bulk_create(events)
        transaction.on_commit(lambda: metrics.runs_lost(lost))
        for task in lost:
            if task.status == TaskStatus.FAILED:
                _announce_final(task)
    return len(lost)


def _redispatch_lost_wakeups(now: datetime) -> int:
    """Publish again for tasks that waited past the grace period without being claimed.

    A queue whose broker depth covers every such task is left alone: its messages are
    just waiting behind a backlog. A smaller depth means messages were lost (Redis flushed
    or restarted, a publish that failed after commit): as many of the oldest stale tasks as
    are missing from the broker are published again (all of them when the depth is
    unknown). Messages that workers hold are not in the depth either, so this may publish
    a few duplicates; they are harmless because a run needs the database claim. Publishing
    the whole stale set instead doubled the broker's work during every backlog.
    """
    cutoff = now - timedelta(seconds=settings.TASK_REDISPATCH_AFTER)
    stale = Task.objects.filter(
        Q(run_at__isnull=True) | Q(run_at__lt=cutoff),
        status__in=CLAIMABLE_STATUSES,
        queued_at__lt=cutoff,
    )
    republished = 0
    # order_by(): without it the model's ordering joins the DISTINCT, one "queue" per task.
    for queue in stale.order_by().values_list("queue", flat=True).distinct():
        with transaction.atomic():
            batch = stale.filter(queue=queue).order_by("queued_at").select_for_update(skip_locked=True)
            tasks = list(batch[:SWEEP_BATCH])
            depth = dispatch.queue_depth(queue)
            if depth is not None:
                tasks = tasks[: max(len(tasks) - depth, 0)]
            if not tasks:
                continue
            for task in tasks:
                task.queued_at = task.updated_at = now
            Task.objects.bulk_update(tasks, ["queued_at", "updated_at"])
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
