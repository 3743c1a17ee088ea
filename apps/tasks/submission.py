"""Submission: a client's request validated against its kind, then created as a task."""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import serializers

from apps.core.exceptions import Conflict, InvalidInput, PayloadTooLarge

from . import dispatch, metrics, quotas
from .models import Task, TaskFile, TaskFileRole, TaskPriority, TaskStatus, TaskTrigger
from .registry import get_kind, kinds_for
from .state_machine import SUBMIT, SUBMIT_FOR_LATER
from .transitions import apply


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
    """Validate a spec against its kind and return an unsaved Task. Raises InvalidInput."""
    kind = get_kind(spec.kind)
    if kind is None or (kind.staff_only and not owner.is_staff):
        known = ", ".join(k.name for k in kinds_for(owner))
        raise InvalidInput({"kind": [f"Unknown kind {spec.kind!r}. Known kinds: {known}."]})
    if _payload_size(spec.payload) > settings.TASK_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"The payload is larger than {settings.TASK_MAX_PAYLOAD_BYTES // 1024} KB.")
    try:
        payload, input_files = kind.validate_payload(spec.payload, owner=owner)
    except serializers.ValidationError as exc:  # the kind's payload serializer
        raise InvalidInput({"payload": exc.detail}) from None

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
    quotas.check_backlog(owner, 1)
    how = "" if trigger == TaskTrigger.API else f" ({TaskTrigger(trigger).label.lower()})"
    submit = partial(apply, (SUBMIT, SUBMIT_FOR_LATER), [task], now=now, details={"how": how}, actor=actor or owner)
    try:
        if task.input_files or connection.in_atomic_block:
            # Input files to link, or a caller's transaction (a savepoint keeps it usable
            # after an IntegrityError): in a transaction.
            with transaction.atomic():
                submit()
                _link_inputs([task])
                _dispatch_on_commit([task])
        else:
            submit()
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
        except InvalidInput as exc:
            errors[str(index)] = exc.fields
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"tasks[{index}]: {exc.detail}") from None
    if errors:
        raise InvalidInput({"tasks": errors})

    keys = [task.idempotency_key for task in tasks if task.idempotency_key]
    if len(keys) != len(set(keys)):
        raise InvalidInput({"tasks": ["Idempotency keys must be unique within one request."]})
    existing = {t.idempotency_key: t for t in Task.objects.filter(owner=owner, idempotency_key__in=keys)}
    result, new = [], []
    for task in tasks:
        if task.idempotency_key in existing:
            result.append(_same_request(existing[task.idempotency_key], task))
        else:
            result.append(task)
            new.append(task)
    if new:
        quotas.check_backlog(owner, len(new))
    try:
        with transaction.atomic():
            apply((SUBMIT, SUBMIT_FOR_LATER), new, now=now, details={"how": " (bulk)"}, actor=owner)
            _link_inputs(new)
            _dispatch_on_commit(new)
    except IntegrityError:
        raise Conflict("A concurrent request used one of these idempotency keys; submit again.") from None
    metrics.tasks_submitted(new)
    return result
