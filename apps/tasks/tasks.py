"""Celery entry points. They take ids, and call services; the state lives in PostgreSQL."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from . import executor, services
from .dispatch import RUN_TASK


@shared_task(name=RUN_TASK, bind=True, ignore_result=True, acks_late=True)
def run_task(self, task_id: str) -> None:
    executor.execute(task_id, worker=self.request.hostname or "")


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
