"""No task lost: killed workers, a flushed broker and poison tasks, with real processes.

Workers here run with 3-second leases (see conftest.worker_env); the test plays beat by
calling the reaper, exactly as the periodic `taskflow.reap_stale_tasks` job does.
"""

import time

import pytest
from django.utils import timezone

from apps.tasks import services
from apps.tasks.models import Task, TaskStatus
from apps.tasks.tests.test_services import broker_messages
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TASKS = "/api/tasks/"


def reap_until(predicate, timeout, message):
    def reaped():
        services.reap_stale_tasks()
        return predicate()

    return wait_for(reaped, timeout=timeout, interval=0.5, message=message)


def test_sigkill_of_the_worker_mid_task_reruns_it_exactly_once_more(owner_api, start_worker, staff_api):
    first = start_worker(concurrency=1, name="doomed")
    response = owner_api.post(TASKS, {"kind": "demo.sleep", "payload": {"seconds": 3, "steps": 6}}, format="json")
    task = Task.objects.get(pk=response.json()["id"])
    wait_for(lambda: Task.objects.get(pk=task.pk).progress > 0, timeout=20, message="the run to make progress")

    first.kill()  # SIGKILL to the main process and its pool child alike
    killed_at = time.monotonic()
    start_worker(concurrency=1, name="rescuer")
    reap_until(
        lambda: Task.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED,
        timeout=60,
        message="the task to succeed on the second worker",
    )
    recovery = time.monotonic() - killed_at
    task.refresh_from_db()
    assert task.attempts == 2
    assert task.result == {"slept": 3.0, "steps": 6}
    assert "rescuer" in task.worker
    statuses = list(task.events.values_list("to_status", flat=True))
    assert statuses.count("running") == 2
    assert statuses.count("succeeded") == 1
    lost = task.events.get(from_status="running", to_status="retrying")
    assert lost.message.startswith("WorkerLost:")
    print(f"\nrecovery after SIGKILL: {recovery:.1f}s")


def test_flushing_redis_after_50_submissions_loses_none_of_them(owner_api, start_worker, redis_client, settings):
    settings.TASK_REDISPATCH_AFTER = 1
    items = [{"kind": "demo.noop", "payload": {"echo": i}} for i in range(50)]
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": items}, format="json")
    assert response.status_code == 201
    assert broker_messages(redis_client, "default") == 50  # the wake-ups reached Redis...
    redis_client.flushdb()  # ...and are gone
    flushed_at = time.monotonic()

    start_worker(concurrency=2, name="after-flush")
    time.sleep(1.5)
    assert Task.objects.filter(status=TaskStatus.SUCCEEDED).count() == 0  # nothing to wake the worker
    reap_until(
        lambda: Task.objects.filter(status=TaskStatus.SUCCEEDED).count() == 50,
        timeout=60,
        message="all 50 tasks to succeed",
    )
    recovery = time.monotonic() - flushed_at
    assert set(Task.objects.values_list("attempts", flat=True)) == {1}
    assert sorted(t.result["echo"] for t in Task.objects.all()) == list(range(50))
    print(f"\nrecovery after FLUSHDB of 50 queued tasks: {recovery:.1f}s")


def test_a_kind_that_kills_its_process_ends_failed_after_its_attempts(staff_api, start_worker):
    start_worker(concurrency=1, name="poisoned")
    response = staff_api.post(TASKS, {"kind": "demo.crash", "max_retries": 1}, format="json")
    task = Task.objects.get(pk=response.json()["id"])
    reap_until(
        lambda: Task.objects.get(pk=task.pk).status == TaskStatus.FAILED,
        timeout=60,
        message="the poison task to fail",
    )
    task.refresh_from_db()
    assert task.attempts == 2
    assert task.error.startswith("WorkerLost: the worker running attempt 2")
    assert task.finished_at <= timezone.now()
    # Whatever is still in flight for it is dropped at the claim: it stays failed.
    time.sleep(1)
    services.reap_stale_tasks()
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("failed", 2)


def test_hard_revoke_stops_a_running_task_and_a_later_retry_still_runs(owner_api, staff_api, start_worker):
    worker = start_worker(concurrency=1, name="revoked")
    response = owner_api.post(TASKS, {"kind": "demo.sleep", "payload": {"seconds": 30, "steps": 60}}, format="json")
    task = Task.objects.get(pk=response.json()["id"])
    wait_for(lambda: Task.objects.get(pk=task.pk).progress > 0, timeout=20, message="the run to make progress")
    assert staff_api.post(f"{TASKS}{task.id}/cancel/", {"hard": True}, format="json").status_code == 200
    # The run's next lease renewal (every second here) finds itself fenced out and stops.
    wait_for(
        lambda: "taken from this run" in worker.read_log(),
        timeout=10,
        message="the worker to stop the revoked run",
    )
    task.refresh_from_db()
    progress_at_revoke = task.progress
    time.sleep(1.5)
    task.refresh_from_db()
    assert (task.status, task.progress) == ("cancelled", progress_at_revoke)

    task.payload = {"seconds": 0.2, "steps": 1}
    task.save(update_fields=["payload"])
    assert owner_api.post(f"{TASKS}{task.id}/retry/", format="json").status_code == 200
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=30, message="the retry")
