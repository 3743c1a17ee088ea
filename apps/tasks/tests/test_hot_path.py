"""The transitions on the hot path are one statement each, event included (apps/tasks/sql/queries.sql)."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.tasks import fairness, services, transitions
from apps.tasks.models import Task, TaskEvent, TaskStatus
from apps.tasks.services import TaskSpec

# Outside a test transaction, as in a request (no ATOMIC_REQUESTS) or a worker.
pytestmark = pytest.mark.django_db(transaction=True)


def queued_task(owner) -> Task:
    return Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=timezone.now())


def test_a_submission_writes_the_task_and_its_event_in_one_statement(owner, django_assert_num_queries):
    # The owner's first submission also reads their quota figures and counts their unfinished
    # tasks (both then kept in the cache, apps/tasks/quotas.py); from the next one on, one statement.
    with django_assert_num_queries(3):
        services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={"echo": 0}))
    with django_assert_num_queries(1):
        task, created = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={"echo": 1}))
    assert created and not task._state.adding
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.payload, stored.created_at) == (TaskStatus.QUEUED, {"echo": 1}, task.created_at)
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.actor, event.message) == ("", "queued", owner, "Submitted")


def test_a_claim_is_one_statement_with_its_event(owner, django_assert_num_queries):
    task = Task.objects.create(
        owner=owner,
        kind="demo.noop",
        status=TaskStatus.RETRYING,
        attempts=1,
        payload={"echo": [1, "two"]},
        result={"from": "the first attempt"},
        queued_at=timezone.now(),
    )
    fairness.current_limits()  # read at most once a second per process, not per claim
    with django_assert_num_queries(1):
        claimed = services.task_claim(task_id=str(task.pk), worker="w1", queue=task.queue)
    assert (claimed.status, claimed.attempts, claimed.worker) == (TaskStatus.RUNNING, 2, "w1")
    # The row comes back typed as the ORM would load it: JSON decoded, UUIDs and datetimes.
    stored = Task.objects.get(pk=task.pk)
    for field in Task._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), field.name
    assert claimed.payload == {"echo": [1, "two"]} and claimed.run_id is not None
    assert claimed.lease_expires_at > claimed.started_at
    assert not claimed._state.adding
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.worker, event.attempt) == ("retrying", "running", "w1", 2)
    assert (event.message, event.actor, event.created_at) == ("Attempt 2", None, claimed.started_at)


@pytest.mark.parametrize(
    ("status", "run_at_offset"),
    [(TaskStatus.RUNNING, None), (TaskStatus.SUCCEEDED, None), (TaskStatus.PENDING, None), (TaskStatus.QUEUED, 60)],
)
def test_a_task_that_is_not_claimable_or_not_due_is_left_alone(owner, status, run_at_offset):
    run_at = timezone.now() + timedelta(seconds=run_at_offset) if run_at_offset else None
    task = Task.objects.create(owner=owner, kind="demo.noop", status=status, run_at=run_at)
    assert services.task_claim(task_id=task.pk, worker="w1") is None
    assert Task.objects.get(pk=task.pk).status == status
    assert not TaskEvent.objects.filter(task=task).exists()


def test_a_claim_of_a_missing_task_is_none(db):
    assert services.task_claim(task_id="00000000-0000-0000-0000-000000000000", worker="w1") is None


def test_concurrent_claims_of_one_task_give_one_run(owner):
    """Many threads, each with its own connection, claim the same task at once: one wins."""
    import threading

    from django.db import connection

    task = queued_task(owner)
    barrier = threading.Barrier(8)
    outcomes = []

    def claim(index):
        try:
            barrier.wait()
            outcomes.append(services.task_claim(task_id=task.pk, worker=f"w{index}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [claimed for claimed in outcomes if claimed is not None]
    assert len(outcomes) == 8 and len(winners) == 1
    assert Task.objects.get(pk=task.pk).worker == winners[0].worker
    assert TaskEvent.objects.filter(task=task).count() == 1


def test_a_late_second_claim_writes_no_event(owner):
    task = queued_task(owner)
    assert services.task_claim(task_id=task.pk, worker="w1") is not None
    # A second worker whose message arrived after the first claim: its compare-and-set matches nothing.
    assert services.task_claim(task_id=task.pk, worker="w2") is None
    assert list(TaskEvent.objects.filter(task=task).values_list("worker", flat=True)) == ["w1"]
    assert Task.objects.get(pk=task.pk).worker == "w1"


def test_finishing_a_run_is_one_statement_with_its_event(owner, django_assert_max_num_queries):
    task = services.task_claim(task_id=queued_task(owner).pk, worker="w1")
    # One statement, plus at most the cached "does the owner have webhook endpoints" lookup.
    with django_assert_max_num_queries(2):
        assert services.task_succeed(task=task, result={"ok": True}) is True
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.result, stored.progress) == (TaskStatus.SUCCEEDED, {"ok": True}, 100)
    assert stored.finished_at is not None and stored.lease_expires_at is None
    last = TaskEvent.objects.filter(task=task).order_by("created_at", "id").last()
    assert (last.from_status, last.to_status, last.message) == ("running", "succeeded", "Succeeded")
    assert services.task_succeed(task=task, result={"ok": True}) is False  # only once
    assert TaskEvent.objects.filter(task=task).count() == 2


def test_a_submission_inside_a_transaction_publishes_its_wake_up_after_the_commit(owner, redis_client):
    from django.db import transaction

    def queued_messages() -> int:
        return sum(redis_client.llen(key) for key in redis_client.keys("default*") if redis_client.type(key) == b"list")

    before = queued_messages()
    with transaction.atomic():
        task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}))
        assert queued_messages() == before
    assert queued_messages() == before + 1
    assert TaskEvent.objects.filter(task=task, to_status="queued").count() == 1


def test_without_data_modifying_statements_the_transitions_run_in_a_transaction(owner, monkeypatch):
    # SQLite, the embedded mode, has none; the same outcome comes from the transaction path.
    monkeypatch.setattr(transitions, "uses_one_statement", lambda: False)
    task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}))
    claimed = services.task_claim(task_id=task.pk, worker="w1")
    assert services.task_claim(task_id=task.pk, worker="w2") is None
    assert services.task_succeed(task=claimed, result=None) is True
    events = TaskEvent.objects.filter(task=task).order_by("created_at", "id")
    assert [(e.from_status, e.to_status) for e in events] == [
        ("", "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]


def prepared_statements() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_claim_and_the_finish_are_prepared_once_per_connection(owner):
    from django.db import connection

    connection.close()  # a new connection: nothing prepared yet
    for _ in range(8):  # past psycopg's prepare_threshold (settings.py)
        task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}))
        assert services.task_succeed(task=services.task_claim(task_id=task.pk, worker="w1"), result=None)
    statements = prepared_statements()
    # One each, however many tasks ran: the submission's INSERT, the claim and the finish.
    assert sum("INSERT INTO tasks_task " in statement for statement in statements) == 1, statements
    assert sum("FOR UPDATE" in statement for statement in statements) == 2, statements


def test_without_prepared_statements_the_hot_path_works_the_same(owner):
    from django.db import connection

    # What DATABASE_PREPARED_STATEMENTS=false leaves: Django's defaults (settings.py).
    options = connection.settings_dict["OPTIONS"]
    saved = dict(options)
    options.pop("server_side_binding", None)
    options.pop("prepare_threshold", None)
    connection.close()
    try:
        for _ in range(8):
            task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}))
            claimed = services.task_claim(task_id=task.pk, worker="w1")
            assert claimed.status == TaskStatus.RUNNING
            assert services.task_succeed(task=claimed, result=[1]) is True
        assert Task.objects.get(pk=task.pk).result == [1]
        assert prepared_statements() == []
    finally:
        options.clear()
        options.update(saved)
        connection.close()


def test_prepared_statements_off_in_the_environment_means_django_defaults():
    import os
    import subprocess
    import sys

    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['OPTIONS'])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "taskflow_site.settings"}
    on = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "DATABASE_PREPARED_STATEMENTS": "false"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'server_side_binding': True" in on.stdout and "'prepare_threshold': 5" in on.stdout
    assert "server_side_binding" not in off.stdout and "prepare_threshold" not in off.stdout


def test_the_claim_is_one_statement_through_djangos_connection(owner):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    task = queued_task(owner)
    fairness.current_limits()
    with CaptureQueriesContext(connection) as statements:
        assert services.task_claim(task_id=task.pk, worker="w1", queue=task.queue) is not None
    assert len(statements) == 1


def test_the_named_statements_share_one_cursor_per_connection_and_a_new_one_after_a_reconnect(owner):
    from django.db import connection, connections

    def kept():
        return connections["default"].__dict__.get("taskflow_kept_cursor", (None, None))[1]

    connection.close()
    task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={}))
    first = kept()
    claimed = services.task_claim(task_id=task.pk, worker="w1")
    assert claimed.status == TaskStatus.RUNNING and kept() is first is not None
    # The connection was cut (a database restart, a health check that failed): a new one, a new cursor.
    connection.close()
    assert services.task_succeed(task=claimed, result={"ok": True}) is True
    assert kept() is not first and not kept().closed
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.result, stored.finished_at.tzinfo is not None) == ("succeeded", {"ok": True}, True)
    assert stored.started_at == claimed.started_at  # read back through the kept cursor as the ORM reads it


def test_a_named_statement_fails_with_djangos_exceptions_and_the_next_one_works(owner):
    from django.db import DataError, InternalError, transaction

    # Django's DataError, not psycopg's: callers catch Django's (the executor's reconnect, the finish's).
    with pytest.raises(DataError), transaction.atomic():
        transitions.execute("SELECT 1 / %(zero)s", {"zero": 0})
    assert transitions.execute("SELECT %(one)s::int", {"one": 1}) == [(1,)]
    with transaction.atomic():
        task = queued_task(owner)
        with pytest.raises(DataError):
            transitions.execute("SELECT 1 / %(zero)s", {"zero": 0})
        # Inside the failed transaction PostgreSQL refuses what follows, through Django's errors too.
        with pytest.raises(InternalError):
            transitions.execute("SELECT 1", {})
        transaction.set_rollback(True)
    assert not Task.objects.filter(pk=task.pk).exists()


def test_a_bulk_publish_puts_every_wake_up_on_the_broker_in_batches(redis_client):
    """More wake-ups than one pipeline holds (PUBLISH_BATCH): each task's arrives exactly once."""
    import json
    import uuid

    from apps.tasks import dispatch

    queue = f"batch-test-{uuid.uuid4().hex[:8]}"
    count = dispatch.PUBLISH_BATCH * 2 + 7
    tasks = [
        Task(id=uuid.uuid4(), kind="demo.noop", queue=queue, priority=priority, timeout=60)
        for priority in ("high", "normal", "low")
        for _ in range(count // 3)
    ]
    try:
        assert dispatch.publish(tasks) == len(tasks)
        keys = [key for key in redis_client.keys(f"{queue}*") if redis_client.type(key) == b"list"]
        messages = [json.loads(raw) for key in keys for raw in redis_client.lrange(key, 0, -1)]
    finally:
        redis_client.delete(*redis_client.keys(f"{queue}*") or [queue])
    ids = sorted(message["headers"]["id"] for message in messages)
    assert ids == sorted(str(task.id) for task in tasks)
    assert len(keys) == 3  # one list per priority level, as single publishes make them


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_the_claim_alone_commits_without_waiting_for_its_wal_flush(owner):
    """synchronous_commit is off for the claim's own transaction only: the finish, and whatever
    the connection runs next, commits durably again."""
    from django.db import connection, transaction

    claimed = services.task_claim(task_id=queued_task(owner).pk, worker="w1")
    assert claimed is not None and not connection.in_atomic_block
    assert _synchronous_commit() == "on"
    with transaction.atomic():  # inside a caller's transaction the setting is left alone
        assert services.task_claim(task_id=queued_task(owner).pk, worker="w1") is not None
        assert _synchronous_commit() == "on"
    assert services.task_succeed(task=claimed, result=None) is True
    assert Task.objects.get(pk=claimed.pk).status == TaskStatus.SUCCEEDED


def test_the_claim_reads_whether_the_owner_has_a_webhook_endpoint(owner, other_user, monkeypatch):
    """So a quick run's finish need not ask Redis; an endpoint created after the claim still
    hears of a run that took longer than transitions.ENDPOINTS_SEEN_FOR."""
    from apps.webhooks import services as webhooks
    from apps.webhooks.models import WebhookDelivery

    monkeypatch.setattr(webhooks, "check_url", lambda url: None)  # no DNS for example.com here
    webhooks.endpoint_create(owner=owner, url="https://example.com/hook", events=["task.succeeded"])
    with_endpoint = services.task_claim(task_id=queued_task(owner).pk, worker="w1")
    without = services.task_claim(task_id=queued_task(other_user).pk, worker="w1")
    assert with_endpoint.endpoints_seen[0] is True and without.endpoints_seen[0] is False
    assert services.task_succeed(task=with_endpoint, result=None)
    assert WebhookDelivery.objects.filter(task=with_endpoint).count() == 1

    # The other owner adds an endpoint while a run of theirs is going.
    webhooks.endpoint_create(owner=other_user, url="https://example.com/other", events=["task.succeeded"])
    monkeypatch.setattr(transitions, "ENDPOINTS_SEEN_FOR", 0.0)  # the run took longer than that
    assert services.task_succeed(task=without, result=None)
    assert WebhookDelivery.objects.filter(task=without).count() == 1


def test_a_task_queued_before_the_database_started_waits_a_lease_before_it_can_be_claimed(owner, settings):
    """A claim committed without its WAL flush may be lost in a crash with its run still going:
    until that run's lease renewal has fenced it out, neither a claim nor the reaper starts
    another run of a task queued before PostgreSQL started."""
    from datetime import UTC, datetime

    from apps.tasks import maintenance

    before_start = Task.objects.create(
        owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=datetime(2000, 1, 1, tzinfo=UTC)
    )
    since_start = queued_task(owner)
    settings.TASK_LEASE_SECONDS = 10**9  # so the server "started less than a lease ago"
    # A wake-up for the old task claims the only task it may: the one queued since the start.
    assert services.task_claim(task_id=before_start.pk, worker="w1").pk == since_start.pk
    assert services.task_claim(task_id=before_start.pk, worker="w1") is None
    assert maintenance.reap_stale_tasks()["redispatched"] == 0

    settings.TASK_LEASE_SECONDS = 30  # a lease after the start: claimable again
    assert services.task_claim(task_id=before_start.pk, worker="w1").pk == before_start.pk


_KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45


@pytest.mark.parametrize(
    "name, value",
    [
        ("kind", "démo.\u200bnoop"),
        ("status", TaskStatus.QUEUED),  # a str enum: passed on as the member, as the ORM does
        ("worker", ""),
        ("description", "x" * 10_000),
        ("callback_url", "https://example.com/hook?q=ü"),
        ("idempotency_key", None),
        ("id", uuid.UUID(int=2**128 - 1)),
        ("id", "00000000-0000-0000-0000-000000000001"),  # a str: converted
        ("run_id", None),
        ("lease_expires_at", datetime(2100, 1, 1, tzinfo=_KATHMANDU)),
        ("started_at", datetime(1, 1, 1, tzinfo=UTC)),
        ("attempts", 2_147_483_647),
        ("attempts", True),  # a bool for an integer column: converted to 1
        ("progress", 100),
        ("progress", 7.9),  # converted: int() as the ORM does
        ("cancel_requested", False),
        ("result", {"a": [1, None, "\u00e9"]}),  # JSON: always the ORM's adapter
        ("payload", None),
        ("owner", 7),  # a foreign key: the ORM's own
    ],
)
def test_a_value_for_a_statement_is_what_the_orm_would_pass(name, value):
    from django.db import connection

    model_field = Task._meta.get_field(name)
    expected = model_field.get_db_prep_save(value, connection)
    passed = transitions.db_value(model_field, value)
    assert type(passed) is type(expected)
    assert getattr(passed, "obj", passed) == getattr(expected, "obj", expected)


def test_a_naive_datetime_for_a_statement_is_made_aware_as_the_orm_does():
    from django.db import connection

    model_field = Task._meta.get_field("started_at")
    naive = datetime(2026, 12, 2, 3, 4, 5)
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        expected = model_field.get_db_prep_save(naive, connection)
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        passed = transitions.db_value(model_field, naive)
    assert passed == expected and passed.utcoffset() is not None
