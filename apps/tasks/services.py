"""Every task state transition happens here, and each one writes a TaskEvent.

Client/staff side: task_submit, task_submit_bulk, task_retry, task_cancel.
Worker side: task_claim, task_report_progress, task_succeed, task_fail (see executor.py).
Maintenance: dispatch_due_tasks, reap_stale_tasks, delete_old_tasks (see tasks.py).
"""

import functools
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers

from apps.core import metrics
from apps.core.exceptions import Conflict, PayloadTooLarge
from apps.core.text import storable_text

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


# --- The statements of the hot path -------------------------------------------------------
#
# A submission, a claim and a finish are one statement each on PostgreSQL: the task row
# and its event together, so atomic without a transaction, one round trip where BEGIN, the
# statement, the INSERT and COMMIT took four. Their SQL is built once per process from the
# models' metadata instead of by the ORM on every call: compiling a query cost a worker more
# CPU than running it (profiled in bench/, see the README's "Performance").


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _fields(model, *, with_pk: bool = True) -> list:
    return [field for field in model._meta.concrete_fields if with_pk or not field.primary_key]


@functools.cache
def _event_insert_sql() -> str:
    """INSERT of one event for every row of the `touched` CTE, the event's values as params."""
    fields = _fields(TaskEvent, with_pk=False)
    columns = ", ".join(_qn(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {_qn(TaskEvent._meta.db_table)} ({columns}) SELECT {placeholders} FROM touched"


def _event_params(event: TaskEvent) -> list:
    return [
        field.get_db_prep_save(field.pre_save(event, add=True), connection)
        for field in _fields(TaskEvent, with_pk=False)
    ]


@functools.cache
def _prepared_cursor_class():
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=True, binary=None):
            return super().execute(query, params, prepare=prepare, binary=binary)

    if connection.settings_dict["ENGINE"].startswith("django_prometheus."):
        from django_prometheus.db.common import ExportingCursorWrapper

        return ExportingCursorWrapper(PreparedCursor, connection.alias, connection.vendor)
    return PreparedCursor


def _hot_cursor():
    """A cursor for the statements of the hot path. On PostgreSQL its parameters are bound on
    the server and each statement is prepared on first use, so it is planned once per
    connection (planning took about as long as running them). Wrapped as Django wraps its
    own cursors: the statements count in the query log, the errors are Django's, and the
    metrics see them."""
    if not (_one_statement() and settings.DATABASE_PREPARED_STATEMENTS):
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = _prepared_cursor_class()(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


def _with_event(cte_sql: str, cte_params: list, event: TaskEvent) -> bool:
    """Run a data-modifying statement on one task row (`cte_sql`, ending in RETURNING 1) and
    INSERT `event` only if it touched the row. Returns whether it did."""
    with _hot_cursor() as cursor:
        cursor.execute(f"WITH touched AS ({cte_sql}) {_event_insert_sql()}", [*cte_params, *_event_params(event)])
        return cursor.rowcount == 1


def _one_statement() -> bool:
    # SQLite (the embedded mode) has no data-modifying CTEs: there, a transaction as usual.
    return connection.vendor == "postgresql"


@functools.cache
def _task_insert_sql() -> str:
    fields = _fields(Task)
    columns = ", ".join(_qn(field.column) for field in fields)
    return f"INSERT INTO {_qn(Task._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) RETURNING 1"


def _insert_with_event(*, task: Task, event: TaskEvent) -> None:
    """INSERT a new task and its first event in one statement."""
    if not _one_statement():
        with transaction.atomic():
            task.save(force_insert=True)
            event.save()
        return
    params = [field.get_db_prep_save(field.pre_save(task, add=True), connection) for field in _fields(Task)]
    _with_event(_task_insert_sql(), params, event)
    task._state.adding, task._state.db = False, connection.alias


@functools.lru_cache(maxsize=64)
def _task_update_sql(set_names: tuple[str, ...], where_names: tuple[tuple[str, bool], ...]) -> str:
    """UPDATE of one task row by id, if the conditions hold; `where_names` pairs a field with
    whether it must be NULL (else it must equal a parameter).

    The row is found by its primary key alone and locked, and the conditions are checked on
    what was locked: with the conditions on the row itself (status = 'running', say), the
    planner may pick a partial index whose predicate they imply and walk every running or
    queued task to find this one, once per transition (seen with a backlog of thousands)."""
    meta = Task._meta
    table, pk = _qn(meta.db_table), _qn(meta.pk.column)
    columns = [_qn(meta.get_field(name).column) for name, _ in where_names]
    assignments = ", ".join(f"{_qn(meta.get_field(name).column)} = %s" for name in set_names)
    conditions = [f"t.{pk} = %s", f"prior.{pk} = t.{pk}"]
    for column, (_, is_null) in zip(columns, where_names, strict=True):
        conditions.append(f"prior.{column} IS NULL" if is_null else f"prior.{column} = %s")
    return (
        f"WITH prior AS (SELECT {', '.join([pk, *columns])} FROM {table} WHERE {pk} = %s FOR UPDATE) "
        f"UPDATE {table} AS t SET {assignments} FROM prior WHERE {' AND '.join(conditions)} RETURNING 1"
    )


def _update_with_event(*, task_id, where: dict, values: dict, event: TaskEvent) -> bool:
    """UPDATE one task row where `where` holds and, only if it matched, INSERT `event`, in
    one statement. A worker makes two transitions per run, claim and finish."""
    if not _one_statement():
        with transaction.atomic():
            touched = Task.objects.filter(pk=task_id, **where).update(**values)
            if touched:
                event.save()
        return bool(touched)
    meta = Task._meta
    sql = _task_update_sql(tuple(values), tuple((name, value is None) for name, value in where.items()))
    pk = meta.pk.get_db_prep_value(task_id, connection)
    params = [pk, *(meta.get_field(name).get_db_prep_save(value, connection) for name, value in values.items()), pk]
    params += [
        meta.get_field(name).get_db_prep_value(value, connection) for name, value in where.items() if value is not None
    ]
    return _with_event(sql, params, event)


@functools.cache
def _claim_sql() -> str:
    """Claim a due task in one statement: lock the row, move it to running if it is claimable
    (the compare-and-set, on what was locked: see _task_update_sql), write the claim's event,
    and return the claimed row."""
    qn, meta = _qn, Task._meta

    def column(name: str) -> str:
        return qn(meta.get_field(name).column)

    table, pk = qn(meta.db_table), qn(meta.pk.column)
    event_table = qn(TaskEvent._meta.db_table)
    returned = ", ".join(f"t.{qn(field.column)}" for field in _fields(Task))
    event_fields = {
        "task": f"c.{pk}",
        "created_at": "%(now)s",
        "from_status": "c.from_status",
        "to_status": "%(running)s",
        "actor": "NULL",
        "message": f"'Attempt ' || c.{column('attempts')}",
        "worker": "%(worker)s",
        "attempt": f"c.{column('attempts')}",
    }
    if {field.name for field in _fields(TaskEvent, with_pk=False)} != set(event_fields):
        raise ImproperlyConfigured("TaskEvent's fields changed: update the claim statement in services._claim_sql")
    return f"""
        WITH prior AS (
            SELECT {pk}, {column("status")} AS from_status, {column("run_at")} AS run_at
            FROM {table} WHERE {pk} = %(id)s FOR UPDATE
        ), claimed AS (
            UPDATE {table} AS t
            SET {column("status")} = %(running)s, {column("attempts")} = t.{column("attempts")} + 1,
                {column("run_id")} = %(run_id)s, {column("worker")} = %(worker)s, {column("started_at")} = %(now)s,
                {column("lease_expires_at")} = %(lease)s, {column("progress")} = 0,
                {column("progress_message")} = '', {column("updated_at")} = %(now)s
            FROM prior
            WHERE t.{pk} = %(id)s AND prior.{pk} = t.{pk} AND prior.from_status = ANY(%(claimable)s)
                AND (prior.run_at IS NULL OR prior.run_at <= %(due)s)
            RETURNING {returned}, prior.from_status
        ), event AS (
            INSERT INTO {event_table} ({", ".join(qn(TaskEvent._meta.get_field(name).column) for name in event_fields)})
            SELECT {", ".join(event_fields.values())} FROM claimed AS c
        )
        SELECT * FROM claimed
    """


@functools.cache
def _task_converters() -> tuple[list[str], list[tuple[int, list, object]]]:
    """Attribute names of Task's columns, and the from-database converters of those that have any."""
    fields = _fields(Task)
    converters = []
    for index, field in enumerate(fields):
        expression = field.get_col(Task._meta.db_table)
        found = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        if found:
            converters.append((index, found, expression))
    return [field.attname for field in fields], converters


def _task_from_row(row) -> Task:
    names, converters = _task_converters()
    values = list(row[: len(names)])
    for index, found, expression in converters:
        for convert in found:
            values[index] = convert(values[index], expression, connection)
    return Task.from_db(connection.alias, names, values)


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
    """Claim a due task for one run with a compare-and-set UPDATE; None if someone else has it.

    The returned task's owner is not loaded: `task.owner` costs a query, `owner_id` none."""
    now = timezone.now()
    run_id = uuid.uuid4()
    if _one_statement():
        with _hot_cursor() as cursor:
            cursor.execute(
                _claim_sql(),
                {
                    "id": Task._meta.pk.get_db_prep_value(task_id, connection),
                    "running": TaskStatus.RUNNING.value,
                    "claimable": [status.value for status in CLAIMABLE_STATUSES],
                    "run_id": run_id,
                    "worker": worker,
                    "now": now,
                    "lease": lease_expiry(now),
                    # A message may arrive a little early; later than that, the dispatcher
                    # publishes it again when it is due.
                    "due": now + timedelta(seconds=1),
                },
            )
            row = cursor.fetchone()
        if row is None:
            return None
        task = _task_from_row(row)
    else:
        task = _claim_in_a_transaction(task_id, worker, run_id=run_id, now=now)
        if task is None:
            return None
    metrics.task_started(task, now=now)
    return task


def _claim_in_a_transaction(task_id, worker: str, *, run_id, now) -> Task | None:
    """task_claim where statements cannot modify data in a CTE (SQLite): read, then compare and set."""
    task = Task.objects.filter(pk=task_id).order_by().first()
    if task is None or task.status not in CLAIMABLE_STATUSES:
        return None
    if task.run_at and task.run_at > now + timedelta(seconds=1):
        return None
    from_status, attempt = task.status, task.attempts + 1
    event = TaskEvent(
        task=task,
        from_status=from_status,
        to_status=TaskStatus.RUNNING,
        worker=worker,
        message=f"Attempt {attempt}",
        attempt=attempt,
    )
    values = {
        "status": TaskStatus.RUNNING,
        "attempts": attempt,
        "run_id": run_id,
        "worker": worker,
        "started_at": now,
        "lease_expires_at": lease_expiry(now),
        "progress": 0,
        "progress_message": "",
        "updated_at": now,
    }
    claimed = _update_with_event(
        task_id=task.pk,
        where={"status": task.status, "attempts": task.attempts, "run_id": task.run_id},
        values=values,
        event=event,
    )
    if not claimed:
        return None
    for name, value in values.items():
        setattr(task, name, value)
    return task


def task_report_progress(*, task: Task, progress: int, message: str) -> bool:
    """Store progress and renew the lease; False when this run no longer owns the task."""
    now = timezone.now()
    return bool(
        Task.objects.filter(pk=task.pk, run_id=task.run_id, status=TaskStatus.RUNNING).update(
            progress=max(0, min(100, progress)),
            progress_message=storable_text(message[:300]),
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
    """Record a failed run: schedule a retry while attempts remain, else fail. Returns the new status.

    The error and traceback quote what the kind raised, which may hold NUL or lone surrogates
    (a CSV's header, say): those become U+FFFD, or the failure itself could not be recorded."""
    error, traceback = storable_text(error), storable_text(traceback)
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
