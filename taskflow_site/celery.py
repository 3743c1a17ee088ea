"""The Celery app. PostgreSQL holds the truth about tasks; the broker only carries wake-ups.

Every setting that differs from Celery's default is here for "no accepted task is lost".
"""

import os

from celery import Celery
from django_structlog.celery.steps import DjangoStructLogInitStep
from kombu.utils.objects import cached_property

from apps.core import celery_hooks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskflow_site.settings")


class TaskflowCelery(Celery):
    @cached_property
    def Worker(self):
        # `celery worker` asks for this before it loads Django, and with it prometheus_client,
        # which picks single- or multiprocess mode on import: the metrics directory comes first.
        celery_hooks.prepare_worker_metrics()
        return super().Worker


app = TaskflowCelery("taskflow")
# Worker logs carry task_id, and the request_id of the request that published the task.
app.steps["worker"].add(DjangoStructLogInitStep)
# Django's logging in every Celery process; worker metrics summed over the pool's children.
celery_hooks.connect()
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.update(
    # Ack after the task ran, so a message whose worker dies mid-run is delivered again.
    task_acks_late=True,
    # ...and also when the pool child is killed (SIGKILL, OOM), not only on exceptions.
    task_reject_on_worker_lost=True,
    # (worker_prefetch_multiplier: CELERY_WORKER_PREFETCH_MULTIPLIER in settings, from the
    # environment; a message stranded in a dead worker's buffer is covered, see there.)
    # JSON only: no pickle from the broker, ever.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # On broker connection loss, cancel running late-ack tasks instead of acking them into
    # the void; their messages come back and the database claim keeps the run single.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # Keep retrying the broker at start-up (Celery 6 otherwise stops retrying).
    broker_connection_retry_on_startup=True,
    # Results and extended metadata (args, worker, name) go to django-celery-results.
    result_extended=True,
    # Tasks are routed to queues by TaskFlow itself; an unknown queue is created on demand.
    task_create_missing_queues=True,
    # Messages carry a priority (0 highest on Redis); tasks without one sit in the middle.
    task_default_priority=6,
    # Workers keep the Django database connection across tasks (CONN_MAX_AGE and health
    # checks still apply): Celery's Django fixup otherwise closes it before and after every
    # task, and a new PostgreSQL connection per task costs most of the throughput.
    CELERY_DB_REUSE_MAX=1_000_000,
)

app.autodiscover_tasks()
