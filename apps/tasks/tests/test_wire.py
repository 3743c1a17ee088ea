"""Wake-ups written straight to Redis (apps/tasks/wire.py): Celery's own message, a real worker runs it."""

import json
import os
import uuid
from datetime import timedelta

import pytest
import structlog
from celery import current_app as celery_app
from django.utils import timezone

from apps.tasks import dispatch, wire
from apps.tasks.models import Task, TaskStatus
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def unsaved(priority="normal", queue=None, **fields) -> Task:
    return Task(
        id=uuid.uuid4(), kind="demo.noop", queue=queue or f"wire-{uuid.uuid4().hex[:8]}", priority=priority, **fields
    )


def broker_messages(redis_client, queue: str) -> dict[bytes, list[dict]]:
    """The messages in each Redis list of `queue` (one list per priority level), oldest first."""
    lists = [key for key in redis_client.keys(f"{queue}*") if redis_client.type(key) == b"list"]
    return {key: [json.loads(raw) for raw in reversed(redis_client.lrange(key, 0, -1))] for key in lists}


@pytest.fixture
def clean_queues(redis_client):
    queues = []
    yield queues
    for queue in queues:
        keys = redis_client.keys(f"{queue}*") + redis_client.keys(f"_kombu.binding*{queue}*")
        if keys:
            redis_client.delete(*keys)


@pytest.mark.parametrize("priority", ["critical", "high", "normal", "low"])
def test_a_prebuilt_wake_up_is_the_message_celery_would_send(priority, redis_client, clean_queues):
    """Same list, same headers, properties and body as `send_task`'s; only the delivery tag is new."""
    task = unsaved(priority, timeout=45)
    clean_queues.append(task.queue)
    with structlog.contextvars.bound_contextvars(request_id="req-1", user_id=7):
        assert dispatch.publish([task]) == 1
        assert dispatch._send_with_celery([task], timezone.now()) == 1
    (_list, (ours, celerys)), *others = broker_messages(redis_client, task.queue).items()
    assert others == []  # both went to the one list of that priority
    ours_tag, celerys_tag = ours["properties"].pop("delivery_tag"), celerys["properties"].pop("delivery_tag")
    assert ours == celerys
    assert ours_tag != celerys_tag and str(uuid.UUID(ours_tag)) == ours_tag
    assert ours["headers"]["id"] == str(task.id)
    # Not the task's own limits: the wake-up may claim another task (the run arms its own).
    assert ours["headers"]["timelimit"] == [dispatch.wake_up_hard_limit(), None]
    assert ours["headers"]["__django_structlog__"] == {"request_id": "req-1", "user_id": 7, "task_kind": "demo.noop"}


def test_each_wake_up_has_its_own_delivery_tag_and_id(redis_client, clean_queues):
    tasks = [unsaved("high", queue="wire-many", timeout=30) for _ in range(dispatch.PUBLISH_BATCH + 3)]
    clean_queues.append("wire-many")
    assert dispatch.publish(tasks) == len(tasks)
    (messages,) = broker_messages(redis_client, "wire-many").values()
    assert [m["headers"]["id"] for m in messages] == [str(t.id) for t in tasks]
    assert len({m["properties"]["delivery_tag"] for m in messages}) == len(tasks)


def test_a_request_id_that_looks_like_a_stand_in_stays_as_it_is(redis_client, clean_queues):
    task = unsaved(timeout=30)
    clean_queues.append(task.queue)
    odd = '@@taskflow-task-id@@ "quoted" \\ \u2028'
    with structlog.contextvars.bound_contextvars(request_id=odd):
        dispatch.publish([task])
    ((message,),) = broker_messages(redis_client, task.queue).values()
    assert message["headers"]["__django_structlog__"]["request_id"] == odd
    assert message["headers"]["id"] == str(task.id)


def test_a_wake_up_for_later_goes_through_celery_with_its_eta(redis_client, clean_queues):
    run_at = timezone.now() + timedelta(seconds=30)
    task, due = unsaved(timeout=30, run_at=run_at), unsaved(timeout=30)
    due.queue = task.queue
    clean_queues.append(task.queue)
    assert dispatch.publish([task, due]) == 2
    messages = [m for found in broker_messages(redis_client, task.queue).values() for m in found]
    etas = {m["headers"]["id"]: m["headers"]["eta"] for m in messages}
    assert etas == {str(task.id): run_at.isoformat(), str(due.id): None}


def test_an_unreachable_broker_loses_the_publish_not_the_request(redis_client, clean_queues, monkeypatch, caplog):
    """A changed broker URL is followed at once (the kept client was for the old one)."""
    task = unsaved(timeout=30)
    clean_queues.append(task.queue)
    assert dispatch.publish([task]) == 1
    monkeypatch.setattr(celery_app.conf, "broker_write_url", "redis://127.0.0.1:9/0")  # nothing listens there
    assert dispatch.publish([task]) == 0
    assert "broker unreachable" in caplog.text
    monkeypatch.undo()
    assert dispatch.publish([task]) == 1  # a fresh client once the broker is back
    assert sum(len(m) for m in broker_messages(redis_client, task.queue).values()) == 2


def test_the_client_is_kept_across_publishes_and_made_anew_in_a_child_process(redis_client, clean_queues):
    """One client per process: kept, and never shared with a forked child (gunicorn's workers)."""
    task = unsaved(timeout=30)
    clean_queues.append(task.queue)
    dispatch.publish([task])
    kept = wire.wire(dispatch.RUN_TASK)
    dispatch.publish([task])
    assert wire.wire(dispatch.RUN_TASK) is kept
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a Wire of its own, and it publishes
        try:
            ok = wire.wire(dispatch.RUN_TASK) is not kept and dispatch.publish([task]) == 1
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert sum(len(m) for m in broker_messages(redis_client, task.queue).values()) == 3


@pytest.mark.worker
def test_a_worker_runs_prebuilt_wake_ups_of_every_priority_single_and_in_bulk(owner, celery_worker):
    """Submitted through the services, published by the wire, run by a real `celery worker`."""
    from apps.tasks import services

    spec = services.TaskSpec
    single = [
        services.task_submit(owner=owner, spec=spec(kind="demo.noop", payload={"echo": p}, priority=p))[0]
        for p in ("critical", "high", "normal", "low")
    ]
    specs = [spec(kind="demo.noop", payload={"echo": n}) for n in range(30)]
    bulk = services.task_submit_bulk(owner=owner, specs=specs)
    ids = [task.pk for task in single + bulk]
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status=TaskStatus.SUCCEEDED).count() == len(ids),
        timeout=60,
        message="every prebuilt wake-up to run",
    )
    echoes = dict(Task.objects.filter(pk__in=[t.pk for t in single]).values_list("priority", "result"))
    assert echoes == {p: {"echo": p} for p in ("critical", "high", "normal", "low")}
    assert set(Task.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}


def test_the_broker_channel_keeps_one_client_for_its_commands(redis_client, clean_queues):
    """kombu's Redis channel made a client per publish and per ack (taskflow_site/broker.py)."""
    clean_queues.append("wire-kept")
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        assert type(channel).__module__ == "taskflow_site.broker"
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        channel._put("wire-kept", {"body": "x", "properties": {"priority": 0}})
    assert redis_client.llen("wire-kept") == 1
