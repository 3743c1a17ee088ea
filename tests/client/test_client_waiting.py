"""The client reads the task detail's waiting reason, and `taskflow show` prints it (in process:
the API's own answer, read by the client's model and CLI)."""

import pytest
from django.utils import timezone

from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus
from taskflow_client.cli import print_task
from taskflow_client.models import Task as ClientTask

pytestmark = pytest.mark.django_db


def test_the_clients_task_carries_the_waiting_reason_and_show_prints_it(owner, owner_api, capsys):
    ConcurrencyLimit.objects.create(scope=LimitScope.OWNER, owner=owner, limit=1)
    Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.RUNNING, started_at=timezone.now())
    held = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=timezone.now())

    task = ClientTask.from_api(owner_api.get(f"/api/tasks/{held.pk}/").json())
    print_task(task)

    assert task.waiting_for == "waiting for a slot: owner limit 1 reached"
    assert "waiting for a slot: owner limit 1 reached" in capsys.readouterr().out
    listed = ClientTask.from_api(owner_api.get("/api/tasks/").json()["results"][0])
    assert listed.waiting_for is None  # not in the list
