"""The engine end to end: the API, real Redis and a real `celery worker` process."""

import pytest

from apps.tasks import dispatch
from apps.tasks.models import Task, TaskStatus
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TASKS = "/api/tasks/"


def submit(client, kind="demo.noop", **data):
    response = client.post(TASKS, {"kind": kind, **data}, format="json")
    assert response.status_code == 201, response.content
    return Task.objects.get(pk=response.json()["id"])


def wait_until_final(task: Task, timeout=30) -> Task:
    def final():
        task.refresh_from_db()
        return task.is_final

    wait_for(final, timeout=timeout, message=f"task {task.id} to finish (last status {task.status})")
    return task


def transitions(task: Task) -> list[tuple[str, str]]:
    return list(task.events.values_list("from_status", "to_status"))


def test_submitted_task_runs_to_succeeded_with_its_result_and_events(owner_api, celery_worker):
    task = wait_until_final(submit(owner_api, payload={"echo": {"answer": 42}}))
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"echo": {"answer": 42}}
    assert (task.attempts, task.progress) == (1, 100)
    assert task.worker.startswith("worker-")
    assert task.started_at and task.finished_at and task.lease_expires_at is None
    assert transitions(task) == [("", "queued"), ("queued", "running"), ("running", "succeeded")]


def test_failing_kind_retries_with_backoff_then_succeeds(owner_api, celery_worker):
    task = wait_until_final(submit(owner_api, "demo.fail", payload={"failures": 2}))
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"succeeded_on_attempt": 3}
    assert task.attempts == 3
    assert transitions(task) == [
        ("", "queued"),
        ("queued", "running"),
        ("running", "retrying"),
        ("retrying", "running"),
        ("running", "retrying"),
        ("retrying", "running"),
        ("running", "succeeded"),
    ]


def test_failing_kind_with_too_few_retries_ends_failed_with_its_traceback(owner_api, celery_worker):
    task = wait_until_final(submit(owner_api, "demo.fail", payload={"failures": 5}, max_retries=1))
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 2
    assert task.error.startswith("DemoFailure: demo failure (attempt 2 of 5 failing)")
    assert "Traceback (most recent call last)" in task.traceback
    assert 'raise DemoFailure(f"{payload' in task.traceback


def test_owner_retry_of_a_failed_task_runs_it_again_to_success(owner_api, celery_worker):
    task = wait_until_final(submit(owner_api, "demo.fail", payload={"failures": 1}, max_retries=0))
    assert task.status == TaskStatus.FAILED
    response = owner_api.post(f"{TASKS}{task.id}/retry/", {"reason": "try again"}, format="json")
    assert response.status_code == 200
    task = wait_until_final(task)
    # The hand retry starts a fresh attempt count, and demo.fail fails only the first one.
    assert task.status == TaskStatus.FAILED
    assert task.events.filter(message="Retried by hand: try again").count() == 1
    task.payload = {"failures": 0, "message": "demo failure"}
    task.save(update_fields=["payload"])
    owner_api.post(f"{TASKS}{task.id}/retry/", format="json")
    task = wait_until_final(task)
    assert task.status == TaskStatus.SUCCEEDED


def test_cancelled_queued_task_never_runs_even_when_its_message_arrives(owner_api, owner, celery_worker):
    task = submit(owner_api, "demo.sleep", payload={"seconds": 0.1, "steps": 1}, run_at="2999-01-01T00:00:00Z")
    assert owner_api.post(f"{TASKS}{task.id}/cancel/", format="json").status_code == 200
    dispatch.publish([task])  # a stray wake-up for the cancelled task
    sentinel = wait_until_final(submit(owner_api))  # the worker has drained its queue past it
    assert sentinel.status == TaskStatus.SUCCEEDED
    task.refresh_from_db()
    assert (task.status, task.attempts, task.started_at) == ("cancelled", 0, None)


def test_cancelling_a_running_sleep_stops_it_soon_after(owner_api, celery_worker):
    task = submit(owner_api, "demo.sleep", payload={"seconds": 20, "steps": 40})
    wait_for(lambda: Task.objects.get(pk=task.pk).progress > 0, timeout=20, message="the sleep to make progress")
    assert owner_api.post(f"{TASKS}{task.id}/cancel/", format="json").status_code == 200
    task = wait_until_final(task, timeout=10)
    assert task.status == TaskStatus.CANCELLED
    assert task.progress < 100
    assert (task.finished_at - task.started_at).total_seconds() < 15
    assert transitions(task)[-2:] == [("running", "running"), ("running", "cancelled")]


def test_the_same_message_delivered_twice_runs_the_kind_once(owner_api, celery_worker):
    task = submit(owner_api, "demo.sleep", payload={"seconds": 1, "steps": 2})
    dispatch.publish([task, task])  # two duplicates on top of the original wake-up
    task = wait_until_final(task)
    assert task.status == TaskStatus.SUCCEEDED
    wait_until_final(submit(owner_api))  # let the duplicates be consumed
    assert task.attempts == 1
    assert task.events.filter(to_status="running").count() == 1


def test_notify_email_sends_to_the_owner(owner_api, celery_worker, mail_dir):
    task = wait_until_final(submit(owner_api, "notify.email", payload={"subject": "Report ready", "body": "See it."}))
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"sent": 1, "to": "owner@example.com"}
    text = next(mail_dir.iterdir()).read_text()
    assert "To: owner@example.com" in text and "Subject: Report ready" in text


def _sessions_opened() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_the_worker_keeps_its_database_connection_across_tasks(owner_api, celery_worker):
    wait_until_final(submit(owner_api))  # warm up: every pool process has connected once
    before = _sessions_opened()
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": [{"kind": "demo.noop"}] * 40}, format="json")
    ids = [t["id"] for t in response.json()["tasks"]]
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status=TaskStatus.SUCCEEDED).count() == 40,
        timeout=30,
        message="40 noop tasks",
    )
    # Without reuse every task opens a new connection (40+); the API test client adds none.
    assert _sessions_opened() - before < 10
