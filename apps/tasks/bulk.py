"""Retry or cancel many tasks: in batches, each task through its service, big sets in the background.

A staff member may pick tens of thousands of tasks ("retry all that match"). Each task still
goes through services.task_retry / task_cancel (the one code path for a transition, with its
lock, checks and TaskEvent), BATCH_SIZE tasks per transaction so no transaction grows huge.
Beyond INLINE_MAX the ids go to Celery (`taskflow.bulk_task_action`)
in messages of MESSAGE_SIZE ids, and the request returns at once.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from apps.core.exceptions import Conflict
from apps.core.services import audit_record, audited

from . import services
from .models import RETRYABLE_STATUSES, WAITING_STATUSES, Task, TaskStatus

BATCH_SIZE = 500
# Retry/cancel of more tasks than this is handed to a Celery task instead of the request.
INLINE_MAX = 1000
MESSAGE_SIZE = 5_000

RETRY = "retry"
CANCEL = "cancel"
ELIGIBLE = {
    RETRY: RETRYABLE_STATUSES,
    CANCEL: (*WAITING_STATUSES, TaskStatus.RUNNING),
}


@dataclass
class BulkOutcome:
    eligible: int
    done: int = 0
    skipped: int = 0
    in_background: bool = False


def _apply_one(action: str, task: Task, *, actor, reason: str) -> None:
    if action == RETRY:
        services.task_retry(task=task, actor=actor, reason=reason)
    elif action == CANCEL:
        services.task_cancel(task=task, actor=actor, reason=reason)
    else:
        raise ValueError(f"unknown bulk action {action!r}")


def tasks_apply(*, action: str, task_ids: list, actor, reason: str = "") -> tuple[int, int]:
    """Apply `action` to each task, BATCH_SIZE per transaction. Returns (done, skipped).

    A task whose state no longer allows the action (someone else got there first) is
    skipped, not an error: the service re-checks it under its row lock.
    """
    done = skipped = 0
    for start in range(0, len(task_ids), BATCH_SIZE):
        batch = task_ids[start : start + BATCH_SIZE]
        with transaction.atomic():
            eligible = Task.objects.filter(pk__in=batch, status__in=ELIGIBLE[action]).only("pk").order_by("pk")
            for task in eligible:
                try:
                    with transaction.atomic():
                        _apply_one(action, task, actor=actor, reason=reason)
                    done += 1
                except Conflict:
                    skipped += 1
        skipped = start + len(batch) - done
    return done, skipped


def tasks_bulk_action(*, action: str, queryset, actor, reason: str = "", source: str = "selected") -> BulkOutcome:
    """Retry or cancel the eligible tasks of `queryset`, inline or in the background, and audit it."""
    task_ids = list(queryset.filter(status__in=ELIGIBLE[action]).order_by().values_list("pk", flat=True))
    outcome = BulkOutcome(eligible=len(task_ids))
    details = {"source": source}
    if len(task_ids) > INLINE_MAX:
        from .tasks import bulk_task_action

        messages = [task_ids[i : i + MESSAGE_SIZE] for i in range(0, len(task_ids), MESSAGE_SIZE)]
        with audited(
            user=actor,
            action=f"task.bulk_{action}",
            reason=reason,
            object_type="tasks.task",
            object_ids=task_ids,
            details=details | {"mode": "background", "messages": len(messages)},
        ) as audit:
            entry = audit.record()  # the messages name it
            for part, ids in enumerate(messages, 1):
                transaction.on_commit(
                    lambda ids=ids, part=part: bulk_task_action.delay(
                        action=action,
                        task_ids=[str(task_id) for task_id in ids],
                        actor_id=actor.pk,
                        reason=reason,
                        audit_entry_id=entry.pk,
                        part=part,
                        parts=len(messages),
                    )
                )
        outcome.in_background = True
        return outcome
    # Each batch commits on its own (one transaction around them all would grow huge): the
    # audit row follows alone, with what was really done.
    outcome.done, outcome.skipped = tasks_apply(action=action, task_ids=task_ids, actor=actor, reason=reason)
    audit_record(
        user=actor,
        action=f"task.bulk_{action}",
        reason=reason,
        object_type="tasks.task",
        object_ids=task_ids,
        details=details | {"mode": "inline", "done": outcome.done, "skipped": outcome.skipped},
    )
    return outcome


def tasks_apply_in_background(
    *, action: str, task_ids: list[str], actor_id: int, reason: str, audit_entry_id: int, part: int, parts: int
) -> tuple[int, int]:
    """The Celery side of a big bulk action: one message's ids, then an audit row with the outcome."""
    actor = get_user_model().objects.filter(pk=actor_id).first()
    done, skipped = tasks_apply(action=action, task_ids=task_ids, actor=actor, reason=reason)
    audit_record(
        user=actor,
        action=f"task.bulk_{action}.finished",
        reason=reason,
        object_type="tasks.task",
        object_ids=task_ids,
        details={"request": audit_entry_id, "part": part, "parts": parts, "done": done, "skipped": skipped},
    )
    return done, skipped
