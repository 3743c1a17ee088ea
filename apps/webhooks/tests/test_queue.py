"""Webhook deliveries run on their own queue and worker processes, never in a task's slot.

Its own module: the other webhook tests' module-scoped worker consumes every queue.
"""

import time

import pytest

from apps.tasks.models import Task
from apps.webhooks.models import WebhookDelivery
from tests.support.processes import wait_for

from .test_webhooks import register, submit


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_deliveries_run_on_their_own_workers_and_a_slow_endpoint_takes_no_task_slot(
    owner_api, other_api, allow_local_webhooks, receiver, start_worker
):
    # As deployed: task workers on the task queues, delivery workers on `webhooks` alone.
    start_worker(concurrency=1, name="tasks-only", queues="default,files,notify,celery")
    receiver.script = [(200, 0.5)]  # a slow endpoint (within the tests' 1 s WEBHOOK_TIMEOUT)
    register(owner_api, receiver.url, events=["task.succeeded"])
    tasks = [submit(owner_api) for _ in range(3)] + [submit(other_api) for _ in range(3)]
    wait_for(
        lambda: Task.objects.filter(pk__in=tasks, status="succeeded").count() == 6,
        timeout=60,
        message="every task to succeed",
    )
    time.sleep(2)
    # The task worker's one slot ran the tasks and never a delivery: they wait on their queue.
    assert receiver.requests == []
    assert WebhookDelivery.objects.filter(status="pending").count() == 3
    start_worker(concurrency=1, name="webhooks-only", queues="webhooks")
    wait_for(lambda: len(receiver.requests) == 3, timeout=60, message="the deliveries, by the webhooks worker")
    wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").count() == 3, message="recorded deliveries")
