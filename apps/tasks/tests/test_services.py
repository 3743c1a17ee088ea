"""State-machine rules at the service level, on the real database (no worker needed)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks import services
from apps.tasks.models import Task, TaskEvent, TaskStatus

pytestmark = pytest.mark.django_db


def broker_messages(redis_client, queue: str) -> int:
    """Messages in a queue across its priority lists (`default`, `default\x06\x163`, ...)."""
    return sum(redis_client.llen(key) for key in redis_client.keys(f"{queue}*") if redis_client.type(key) == b"list")


def make_task(owner, **fields) -> Task:
    defaults = {"kind": "demo.noop", "status": TaskStatus.QUEUED, "queued_at": timezone.now(), "max_retries": 2}
    return Task.objects.create(owner=owner, **(defaults | fields))


def test_a_task_is_claimed_once_and_a_second_claim_gets_nothing(owner):
    task = make_task(owner)
    first = services.task_claim(task_id=task.pk, worker="w1")
    second = services.task_claim(task_id=task.pk, worker="w2")
    assert first is not None and second is None
    task.refresh_from_db()
    assert (task.status, task.attempts, task.worker) == ("running", 1, "w1")
    assert task.lease_expires_at > timezone.now()


def test_a_cancelled_task_cannot_be_claimed(owner):
    task = make_task(owner, status=TaskStatus.CANCELLED)
    assert services.task_claim(task_id=task.pk, worker="w1") is None
    assert Task.objects.get(pk=task.pk).attempts == 0


def test_a_retry_that_is_not_due_yet_cannot_be_claimed(owner):
    task = make_task(owner, status=TaskStatus.RETRYING, run_at=timezone.now() + timedelta(minutes=5))
    assert services.task_claim(task_id=task.pk, worker="w1") is None


def test_a_fenced_out_run_cannot_finish_or_report_progress(owner):
    task = make_task(owner)
    stale_run = services.task_claim(task_id=task.pk, worker="w1")
    # The lease expired and the reaper handed the task to another run.
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.reap_stale_tasks()
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
    fresh_run = services.task_claim(task_id=task.pk, worker="w2")
    assert fresh_run is not None
    assert services.task_report_progress(task=stale_run, progress=50, message="late") is False
    assert services.task_succeed(task=stale_run, result={"from": "stale"}) is False
    assert services.task_succeed(task=fresh_run, result={"from": "fresh"}) is True
    task.refresh_from_db()
    assert (task.status, task.result, task.attempts) == ("succeeded", {"from": "fresh"}, 2)


def test_a_failure_with_attempts_left_schedules_a_retry_with_backoff(owner):
    task = make_task(owner, kind="demo.fail")
    run = services.task_claim(task_id=task.pk, worker="w1")
    before = timezone.now()
    assert services.task_fail(task=run, error="Boom: once", traceback="tb") == "retrying"
    task.refresh_from_db()
    assert (task.status, task.error, task.traceback) == ("retrying", "Boom: once", "tb")
    # demo.fail backs off 1 s on the first retry, with jitter between half and all of it.
    assert before + timedelta(seconds=0.5) <= task.run_at <= timezone.now() + timedelta(seconds=1)


def test_a_failure_on_the_last_attempt_is_final(owner):
    task = make_task(owner, kind="demo.fail", max_retries=0)
    run = services.task_claim(task_id=task.pk, worker="w1")
    assert services.task_fail(task=run, error="Boom: last") == "failed"
    task.refresh_from_db()
    assert task.status == "failed" and task.finished_at is not None


def test_a_permanent_error_is_not_retried(owner):
    task = make_task(owner, kind="demo.fail", max_retries=5)
    run = services.task_claim(task_id=task.pk, worker="w1")
    assert services.task_fail(task=run, error="InvalidPayload", permanent=True) == "failed"


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 1, 2), (2, 2, 4), (3, 4, 8), (10, 300, 600)])
def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(attempt, low, high):
    delays = [services.retry_delay(attempt=attempt, backoff=2, backoff_max=600) for _ in range(200)]
    assert all(low <= delay <= high for delay in delays)
    assert max(delays) - min(delays) > 0  # jitter spreads a thundering herd


def test_the_reaper_turns_an_expired_lease_into_a_retry(owner):
    task = make_task(owner, kind="demo.sleep")
    services.task_claim(task_id=task.pk, worker="w1")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.reap_stale_tasks()["lost_runs"] == 1
    task.refresh_from_db()
    assert task.status == "retrying"
    assert task.error.startswith("WorkerLost: the worker running attempt 1 (w1)")
    assert task.events.last().to_status == "retrying"


def test_the_reaper_fails_a_lost_run_that_has_no_attempts_left(owner):
    task = make_task(owner, kind="demo.sleep", max_retries=0)
    services.task_claim(task_id=task.pk, worker="w1")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.reap_stale_tasks()
    task.refresh_from_db()
    assert (task.status, task.run_id) == ("failed", task.run_id)
    assert task.finished_at is not None


def test_the_reaper_leaves_live_leases_alone(owner):
    task = make_task(owner)
    services.task_claim(task_id=task.pk, worker="w1")
    assert services.reap_stale_tasks()["lost_runs"] == 0
    assert Task.objects.get(pk=task.pk).status == "running"


def test_the_reaper_republishes_unclaimed_tasks_when_the_broker_lost_them(
    owner, redis_client, settings, django_capture_on_commit_callbacks
):
    settings.TASK_REDISPATCH_AFTER = 60
    redis_client.flushdb()
    stale = make_task(owner, queued_at=timezone.now() - timedelta(minutes=5))
    fresh = make_task(owner)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap_stale_tasks()["redispatched"] == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.queued_at > timezone.now() - timedelta(seconds=5)
    assert broker_messages(redis_client, "default") == 1


def test_the_reaper_does_not_republish_a_backlog_that_is_still_in_the_broker(
    owner, redis_client, django_capture_on_commit_callbacks
):
    redis_client.flushdb()
    stale = make_task(owner, queued_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        services.dispatch.publish([stale])  # its wake-up is still waiting behind a backlog
        assert services.reap_stale_tasks()["redispatched"] == 0


def test_retention_deletes_old_finished_tasks_and_their_events_only(owner):
    old = timezone.now() - timedelta(days=40)
    old_done = make_task(owner, status=TaskStatus.SUCCEEDED, finished_at=old)
    TaskEvent.objects.create(task=old_done, to_status="succeeded")
    old_running = make_task(owner, status=TaskStatus.RUNNING)
    recent_done = make_task(owner, status=TaskStatus.FAILED, finished_at=timezone.now())
    assert services.delete_old_tasks(older_than=timedelta(days=30), batch_size=1) == 1
    assert set(Task.objects.values_list("pk", flat=True)) == {old_running.pk, recent_done.pk}
    assert not TaskEvent.objects.filter(task_id=old_done.pk).exists()


def test_the_reap_tasks_command_reports_what_it_recovered(owner):
    from io import StringIO

    from django.core.management import call_command

    task = make_task(owner, kind="demo.sleep")
    services.task_claim(task_id=task.pk, worker="w1")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    out = StringIO()
    call_command("reap_tasks", stdout=out)
    # The lost run becomes a retry, and its short backoff is published at once as an ETA wake-up.
    assert out.getvalue().strip() == "lost_runs: 1, redispatched: 0, due: 1"
    assert Task.objects.get(pk=task.pk).status == "retrying"
