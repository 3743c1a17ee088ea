"""`apply`: the one function that moves tasks through the state machine (state_machine.py).

Every transition is a compare-and-set: a task moves only from one of the transition's
from-states (and when its guard and fence hold), its TaskEvent is written in the same
statement or transaction, and the tasks that moved are returned; an empty list means
nothing matched. A transition that reaches a final state records its webhook deliveries in
that transaction, from the task as the transition left it.

On PostgreSQL a transition of one task with a named statement (sql/queries.sql) is one
round trip; everything else, and everything on SQLite (the embedded mode, which has no
data-modifying CTEs), locks the rows and writes through the ORM in a transaction.
"""

import copy
import functools
import re
import textwrap
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

from django.apps import apps as django_apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import live
from .models import PRIORITY_ORDER, Task, TaskEvent
from .state_machine import CLAIM_GRACE, TRANSITIONS, Transition

# Picks the transition, values and event details of each locked task (or None: it stays).
Plan = Callable[[Task], tuple[Transition, dict, dict] | None]

# How long the claim's answer to "has the owner an enabled webhook endpoint?" stands in for
# asking again at the finish (a cached Redis read). An endpoint created meanwhile hears of the
# tasks claimed after it, and of every run that takes longer than this.
ENDPOINTS_SEEN_FOR = 1.0

_NAME = re.compile(r"^-- name: (\w+)\n(?:--.*\n)*", re.MULTILINE)


def _load_queries(path: Path) -> dict[str, str]:
    """The named statements of a .sql file: each starts with `-- name: <name>`."""
    parts = _NAME.split(path.read_text())[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


def _statements() -> dict[str, str]:
    """The file's statements with their placeholders filled: one for each transition that has
    one (by the transition's name), and the submission's insert."""
    queries = _load_queries(Path(__file__).parent / "sql" / "queries.sql")
    endpoint_table = django_apps.get_model("webhooks", "WebhookEndpoint")._meta.db_table
    columns = [field.column for field in Task._meta.concrete_fields]
    # The moved row in the order of Task's fields (task_from_row), then its state before.
    returning = ", ".join([*(f"t.{column}" for column in columns), "prior.from_status"])
    statements = {
        "insert_task": queries["insert_task"].format(
            task_columns=", ".join(columns), task_values=", ".join(f"%({column})s" for column in columns)
        )
    }
    for transition in TRANSITIONS:
        if transition.statement:
            assignments = ", ".join(
                f"{Task._meta.get_field(name).column} = %({name})s" for name in transition.written_fields[1:]
            )
            fill = functools.partial(
                queries[transition.statement].format,
                to_state=transition.to_state,
                from_states=", ".join(f"'{state}'" for state in transition.from_states),
                assignments=assignments,
                endpoint_table=endpoint_table,
                alone="",
            )
            statements[transition.name] = fill(task_returning=returning)
            if transition.fenced:
                # Without webhooks to record, the caller's task plus the changes is the moved
                # task: loading the whole row back cost the worker more CPU than it is worth.
                statements[f"{transition.name}, moved or not"] = fill(
                    task_returning="t.id, t.status, t.attempts, prior.from_status"
                )
            if transition.statement == "claim_task":  # and the fair claim's two (fairness.py)
                rank = "CASE " + " ".join(f"WHEN t.priority = '{p}' THEN {n}" for p, n in PRIORITY_ORDER[:-1])
                choice = queries["fair_choice"].format(
                    claimable=fill.keywords["from_states"], rank=f"{rank} ELSE {PRIORITY_ORDER[-1][1]} END"
                )
                statements["fair_candidates"] = queries["fair_candidates"].format(fair_choice=choice)
                statements["claim_listed"] = queries["claim_listed"].format(**fill.keywords, task_returning=returning)
                alone = "\n" + textwrap.indent(
                    queries["alone"].format(from_states=fill.keywords["from_states"]), " " * 8
                )
                statements["claim_named_alone"] = fill(task_returning=returning, alone=alone)
    event_columns = {field.column for field in TaskEvent._meta.concrete_fields if not field.primary_key}
    expected = {"task_id", "created_at", "from_status", "to_status", "actor_id", "message", "worker", "attempt"}
    if event_columns != expected:
        raise RuntimeError("TaskEvent's columns changed: update the events written in apps/tasks/sql/queries.sql")
    return statements


STATEMENTS = _statements()
_FIELDS = {model_field.name: model_field for model_field in Task._meta.concrete_fields}

# Field classes whose `get_db_prep_save(value)` is the value itself on PostgreSQL, for None and
# for values of the type named here (Django's own conversions: `to_python` returns a str, an
# aware datetime, a UUID or a bool as it is, and PostgreSQL's backend passes datetimes and
# UUIDs on unchanged; integers are not here: it wraps them in psycopg's sized types, which
# server-side binding needs). Exact classes only: a subclass may convert. The named statements
# pass a task's values this way, as every call through the ORM's conversions cost a POST and a
# worker's run more CPU than their statement's round trip; pinned against the ORM's result
# in apps/tasks/tests/test_hot_path.py.
_AS_IS = {
    models.CharField: str,
    models.TextField: str,
    models.URLField: str,
    models.DateTimeField: datetime,
    models.UUIDField: UUID,
    models.BooleanField: bool,
}


def _passes_as_is(accepted: type | None, value) -> bool:
    if accepted is None:
        return False
    if value is None:
        return True
    if accepted is bool:
        return type(value) is bool
    if accepted is datetime:  # a naive one is made aware, with a warning
        return isinstance(value, datetime) and value.utcoffset() is not None
    return isinstance(value, accepted)


def db_value(model_field: models.Field, value):
    """`model_field.get_db_prep_save(value, connection)` for a named statement on PostgreSQL,
    without the ORM's calls where they would give the value back unchanged (_AS_IS)."""
    if _passes_as_is(_AS_IS.get(type(model_field)), value):
        return value
    return model_field.get_db_prep_save(value, connection)


@functools.cache
def _task_converters() -> tuple[list[str], list[tuple[int, list, object]]]:
    """Task's attribute names, and the from-database converters of the fields that have any."""
    converters = []
    for index, model_field in enumerate(Task._meta.concrete_fields):
        expression = model_field.get_col(Task._meta.db_table)
        found = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        if found:
            converters.append((index, found, expression))
    return [model_field.attname for model_field in Task._meta.concrete_fields], converters


def task_from_row(row) -> Task:
    """A Task from a row of a statement's {task_returning}, typed as the ORM loads it.

    (Task.objects.raw() does the same but works out the columns and converters again on
    every call, which cost the worker more CPU than the statement's round trip.)"""
    names, converters = _task_converters()
    values = list(row[: len(names)])
    for index, found, expression in converters:
        for convert in found:
            values[index] = convert(values[index], expression, connection)
    return Task.from_db(connection.alias, names, values)


def restart_grace() -> timedelta:
    """After PostgreSQL starts, how long tasks queued before may be the subject of a claim lost
    in the crash, with its run still going until its next lease renewal (sql/queries.sql)."""
    return timedelta(seconds=settings.TASK_LEASE_SECONDS)


def database_restarted_within_grace() -> bool:
    """True for a lease after PostgreSQL (re)started: the reaper re-dispatches nothing then."""
    if not uses_one_statement():
        return False  # (the asynchronous claim is PostgreSQL's alone)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time() > now() - %s", [restart_grace()])
        return cursor.fetchone()[0]


def uses_one_statement() -> bool:
    return connection.vendor == "postgresql"


def cleared_value(name: str):
    model_field = Task._meta.get_field(name)
    return None if model_field.null else model_field.get_default()


def _changes(transition: Transition, values: dict, now: datetime) -> dict:
    """What `transition` writes, increments aside."""
    missing = set(transition.sets) - set(values)
    if missing:
        raise TypeError(f"{transition.name} needs values for {sorted(missing)}")
    changes = {name: values[name] for name in transition.sets}
    changes.update({name: now for name in transition.stamps})
    changes.update({name: cleared_value(name) for name in transition.clears})
    changes.update(transition.fixed)
    if transition.to_state:
        changes["status"] = transition.to_state
    return changes


def _message(transition: Transition, details: dict, attempt: int) -> str:
    message = transition.message.format(attempt=attempt, **details)
    return message[: transition.message_limit] if transition.message_limit else message


def _announce(tasks: list[Task]) -> None:
    from apps.webhooks.services import record_task_deliveries

    for task in tasks:
        record_task_deliveries(task=task)


def _may_announce(task: Task) -> bool:
    if task.callback_url:
        return True
    seen = getattr(task, "endpoints_seen", None)  # (answer, when) from the claim
    if seen is not None and time.monotonic() - seen[1] < ENDPOINTS_SEEN_FOR:
        return seen[0]
    from apps.webhooks.services import owner_has_endpoints

    return owner_has_endpoints(task.owner_id)


def apply(
    transitions: Transition | tuple[Transition, ...],
    target,
    *,
    now: datetime | None = None,
    values: dict | None = None,
    details: dict | None = None,
    actor=None,
    plan: Plan | None = None,
    order_by: Iterable[str] | None = None,
    limit: int | None = None,
    skip_locked: bool = False,
) -> list[Task]:
    """Move `target` by the transition whose from-states hold its state (one Task or id, ids,
    or a QuerySet; for a creating transition, new Tasks). `plan(task)` instead picks the
    transition and values of each locked task. Returns the tasks that moved, as moved."""
    transitions = transitions if isinstance(transitions, tuple) else (transitions,)
    moved = _apply(transitions, target, now=now or timezone.now(), values=values or {}, details=details or {},
                   actor=actor, plan=plan, order_by=order_by, limit=limit, skip_locked=skip_locked)  # fmt: skip
    if moved and any(transition.message or "progress" in transition.sets for transition in transitions):
        # Open live streams hear of it after the commit (a new history entry, or progress).
        live.publish(live.keys_of(moved))
    return moved


class Pick:
    """A target that finds its own task when the transition runs (fairness.FairPick)."""

    def move(self, transition: Transition, *, now: datetime, values: dict) -> list[Task]:
        raise NotImplementedError


def _apply(transitions, target, *, now, values, details, actor, plan, order_by, limit, skip_locked) -> list[Task]:
    if isinstance(target, Pick):
        return target.move(transitions[0], now=now, values=values)
    if not transitions[0].from_states:
        return _create(transitions, list(target), now=now, details=details, actor=actor)
    single = isinstance(target, (Task, UUID, str))
    if single and plan is None and len(transitions) == 1 and transitions[0].statement and uses_one_statement():
        return _run_statement(transitions[0], target, now=now, values=values, details=details)
    if isinstance(target, Task) and plan is None and len(transitions) == 1 and not transitions[0].message:
        return _update(transitions[0], target, now=now, values=values)
    return _lock_and_move(
        transitions,
        target,
        now=now,
        values=values,
        details=details,
        actor=actor,
        plan=plan,
        order_by=order_by,
        limit=limit,
        skip_locked=skip_locked,
    )


def _candidates(transitions: tuple[Transition, ...], target, now: datetime) -> QuerySet:
    if isinstance(target, QuerySet):
        rows = target
    elif isinstance(target, (Task, UUID, str)):
        rows = Task.objects.filter(pk=target.pk if isinstance(target, Task) else target)
    else:
        rows = Task.objects.filter(pk__in=list(target))
    guards = {transition.guard for transition in transitions}
    if len(guards) == 1:
        (guard,) = guards
        states = sorted({state for transition in transitions for state in transition.from_states})
        condition = Q(status__in=states) & (guard(now) if guard else Q())
    else:
        condition = Q()
        for transition in transitions:
            condition |= Q(status__in=transition.from_states) & (transition.guard(now) if transition.guard else Q())
    if isinstance(target, Task) and any(transition.fenced for transition in transitions):
        condition &= Q(run_id=target.run_id)
    return rows.filter(condition)


def _update(transition: Transition, target, *, now: datetime, values: dict) -> list[Task]:
    """A transition without an event: one conditional UPDATE, its row count decides."""
    changes = _changes(transition, values, now)
    increments = {name: F(name) + 1 for name in transition.increments}
    if not _candidates((transition,), target, now).update(**changes, **increments):
        return []
    moved = copy.copy(target)
    for name, value in changes.items():
        setattr(moved, name, value)
    return [moved]


def _run_statement(transition: Transition, target, *, now: datetime, values: dict, details: dict) -> list[Task]:
    """One task, one statement: lock by primary key, compare and set, event, the row back."""
    params, changes = statement_params(transition, target.pk if isinstance(target, Task) else target, now, values)
    if transition.fenced:
        params.update(
            fence=target.run_id,
            worker=target.worker,
            message=_message(transition, details, target.attempts),
        )
    if transition.is_final and _may_announce(target):
        # Webhook deliveries are recorded in the transaction that finishes the task, from the
        # task as the statement returned it; without any to record (the usual case) the
        # transition is one statement, no transaction.
        with transaction.atomic():
            moved = fetch(STATEMENTS[transition.name], params)
            _announce(moved)
        return moved
    if not transition.fenced:
        return fetch(STATEMENTS[transition.name], params)
    if not execute(STATEMENTS[f"{transition.name}, moved or not"], params):
        return []
    moved = copy.copy(target)
    for name, value in changes.items():
        setattr(moved, name, value)
    moved.status = transition.to_state
    return [moved]


def statement_params(transition: Transition, task_id, now: datetime, values: dict) -> tuple[dict, dict]:
    """The parameters of a transition's statement (sql/queries.sql), and what it changes."""
    changes = _changes(transition, values, now)
    del changes["status"]  # written out in the statement
    params = {name: db_value(_FIELDS[name], value) for name, value in changes.items()}
    params.update(id=db_value(Task._meta.pk, task_id), now=now)
    if transition.statement == "claim_task":
        params["due"] = now + CLAIM_GRACE  # the claim's guard, written out in its statement
        # Its commit need not wait for the WAL flush, unless it is part of a caller's transaction.
        params["async_commit"] = not connection.in_atomic_block
        params["restart_grace"] = restart_grace()
    return params, changes


def execute(statement: str, params: dict) -> list[tuple]:
    """Run a named statement and return its rows, on a psycopg cursor kept per connection.

    Django's `connection.cursor()` makes a psycopg cursor and its wrapper for every statement,
    and psycopg then sets its parameter dumpers and row loaders up afresh: ~100 µs a statement
    here, a third of the hot path's client side per statement (docs/performance.md). The kept
    cursor (the backend's own `create_cursor()`, time zone included) is made again for a new
    connection. Django's checks still run: the health check and reconnect, no statement in a
    broken transaction, database errors raised as Django's (the executor reconnects on its
    OperationalError). While queries are logged (DEBUG, or a test counting them) the statement
    goes through Django's cursor, which logs it."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.queries_logged:
        with db.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_no_broken_transaction()
    kept = db.__dict__.get("taskflow_kept_cursor")
    if kept is None or kept[0] is not db.connection or kept[1].closed:
        with db.wrap_database_errors:
            kept = db.taskflow_kept_cursor = (db.connection, db.create_cursor())
    cursor = kept[1]
    with db.wrap_database_errors:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def fetch(statement: str, params: dict) -> list[Task]:
    rows = execute(statement, params)
    tasks = [task_from_row(row) for row in rows]
    width = len(Task._meta.concrete_fields) + 1  # the task, then its state before
    for task, row in zip(tasks, rows, strict=True):
        if len(row) > width:  # the claim's: whether the owner has an enabled webhook endpoint
            task.endpoints_seen = (row[width], time.monotonic())
    return tasks


def _lock_and_move(
    transitions, target, *, now, values, details, actor, plan, order_by, limit, skip_locked
) -> list[Task]:
    by_state = {state: transition for transition in transitions for state in transition.from_states}
    with transaction.atomic():
        rows = _candidates(transitions, target, now).select_for_update(skip_locked=skip_locked)
        rows = rows.order_by(*order_by) if order_by is not None else rows
        locked = list(rows[:limit] if limit else rows)
        moved, events, fields = [], [], set()
        for task in locked:
            planned = plan(task) if plan else (by_state[task.status], values, details)
            if planned is None:
                continue
            transition, row_values, row_details = planned
            from_status = task.status
            for name, value in _changes(transition, row_values, now).items():
                setattr(task, name, value)
            for name in transition.increments:
                setattr(task, name, getattr(task, name) + 1)
            fields.update(transition.written_fields)
            moved.append(task)
            if transition.message:
                events.append(
                    TaskEvent(
                        task=task,
                        from_status=from_status,
                        to_status=transition.to_state or from_status,
                        actor=actor,
                        message=_message(transition, row_details, task.attempts),
                        worker=task.worker if transition.names_worker else "",
                        attempt=task.attempts,
                    )
                )
        if len(moved) == 1:
            Task.objects.filter(pk=moved[0].pk).update(**{name: getattr(moved[0], name) for name in fields})
        elif moved:
            Task.objects.bulk_update(moved, sorted(fields))
        TaskEvent.objects.bulk_create(events)
        _announce([task for task in moved if task.is_final])
    return moved


def _create(transitions, tasks: list[Task], *, now: datetime, details: dict, actor) -> list[Task]:
    """Insert new tasks, each by the creating transition that reaches its state, and their events."""
    by_state = {transition.to_state: transition for transition in transitions}
    for task in tasks:
        for name in by_state[task.status].stamps:
            setattr(task, name, now)
    if len(tasks) == 1 and uses_one_statement():
        task = tasks[0]
        params = {
            model_field.column: db_value(model_field, model_field.pre_save(task, add=True))
            for model_field in Task._meta.concrete_fields
        }
        message = _message(by_state[task.status], details, task.attempts)
        params.update(now=now, actor_id=getattr(actor, "pk", actor), message=message)
        execute(STATEMENTS["insert_task"], params)
        task._state.adding, task._state.db = False, connection.alias
        return tasks
    with transaction.atomic():
        if len(tasks) == 1:
            tasks[0].save(force_insert=True)
        else:
            Task.objects.bulk_create(tasks)
        TaskEvent.objects.bulk_create(
            TaskEvent(
                task=task,
                from_status="",
                to_status=task.status,
                actor=actor,
                message=_message(by_state[task.status], details, task.attempts),
                attempt=task.attempts,
            )
            for task in tasks
        )
    return tasks
