"""Celery entry points. They take ids, and call services; the state lives in PostgreSQL."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from . import executor, rollups, services
from .dispatch import RUN_TASK


@shared_task(name=RUN_TASK, bind=True, ignore_result=True, acks_late=True)
def run_task(self, task_id: str) -> None:
    # The queue the wake-up came from: the claim takes the fairest task of that queue.
    queue = (self.request.delivery_info or {}).get("routing_key") or None
    executor.execute(task_id, worker=self.request.hostname or "", queue=queue)


@shared_task(name="taskflow.reap_stale_tasks", ignore_result=True)
def reap_stale_tasks() -> dict:
    return services.reap_stale_tasks()


@shared_task(name="taskflow.dispatch_due_tasks", ignore_result=True)
def dispatch_due_tasks() -> int:
    from django.utils import timezone

    return services.dispatch_due_tasks(now=timezone.now())


@shared_task(name="taskflow.delete_old_tasks", ignore_result=True)
def delete_old_tasks() -> int:
    return services.delete_old_tasks(older_than=timedelta(days=settings.TASK_RETENTION_DAYS))


@shared_task(name="taskflow.refresh_task_rollups", ignore_result=True)
def refresh_task_rollups() -> dict:
    return rollups.refresh()


@shared_task(name="taskflow.fire_schedule", ignore_result=True)
def fire_schedule(schedule_id: str) -> str | None:
    from .schedule_services import schedule_fire

    task = schedule_fire(schedule_id=schedule_id)
    return str(task.pk) if task else None


@shared_task(name="taskflow.fire_due_schedules", ignore_result=True)
def fire_due_schedules() -> int:
    from .schedule_services import fire_due_schedules as sweep

    return sweep()


@shared_task(name="taskflow.bulk_task_action", ignore_result=True, acks_late=True)
def bulk_task_action(
    *, action: str, task_ids: list[str], actor_id: int, reason: str, audit_entry_id: int, part: int, parts: int
) -> tuple[int, int]:
    """One message of a big admin bulk retry/cancel; see apps/tasks/bulk.py."""
    from .bulk import tasks_apply_in_background

    return tasks_apply_in_background(
        action=action,
        task_ids=task_ids,
        actor_id=actor_id,
        reason=reason,
        audit_entry_id=audit_entry_id,
        part=part,
        parts=parts,
    )
