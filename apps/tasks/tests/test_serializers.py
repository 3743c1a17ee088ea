"""The task representation built from cached fields (apps/core/serializers.py) is DRF's own, and
the prebuilt submit serializer validates as a fresh one."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from apps.core.serializers import validated_data
from apps.tasks.models import Schedule, Task, TaskEvent, TaskStatus
from apps.tasks.serializers import (
    TaskDetailSerializer,
    TaskEventSerializer,
    TaskListSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
)

pytestmark = pytest.mark.django_db


def drf_representation(serializer_class, instance) -> dict:
    """What DRF's own Serializer.to_representation makes of it, fields built afresh."""
    serializer = serializer_class(instance)
    return serializers.ModelSerializer.to_representation(serializer, instance)


@pytest.fixture
def varied_tasks(owner, staff):
    now = timezone.now()
    schedule = Schedule.objects.create(owner=owner, name="nightly", kind="demo.noop", interval_seconds=60)
    return [
        Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=now),
        Task.objects.create(
            owner=staff,
            kind="demo.sleep",
            title="Ünïcode <b>title</b>",
            payload={"seconds": 1.5, "nested": [1, None, {"a": "b"}]},
            status=TaskStatus.RUNNING,
            attempts=2,
            run_id=uuid.uuid4(),
            worker="celery@host",
            progress=40,
            progress_message="half way",
            started_at=now,
            lease_expires_at=now + timedelta(seconds=30),
            run_at=now - timedelta(microseconds=1),
            idempotency_key="key-1",
            schedule=schedule,
            trigger="schedule",
        ),
        Task.objects.create(
            owner=owner,
            kind="demo.fail",
            status=TaskStatus.FAILED,
            result=["a", 1, 2.5, True],
            error="ValueError: boom",
            traceback="Traceback ...",
            finished_at=now,
            callback_url="https://example.com/hook",
            cancel_requested=True,
        ),
    ]


@pytest.mark.parametrize("serializer_class", [TaskSerializer, TaskListSerializer])
def test_every_field_is_rendered_as_drf_renders_it(varied_tasks, serializer_class):
    for task in Task.objects.select_related("owner").filter(pk__in=[t.pk for t in varied_tasks]):
        fast = serializer_class(task).data
        assert fast == drf_representation(serializer_class, task)
        assert list(fast) == serializer_class.Meta.fields  # same keys, same order


def test_a_list_renders_every_row_from_one_set_of_fields(varied_tasks):
    tasks = list(Task.objects.select_related("owner").order_by("created_at"))
    data = TaskListSerializer(tasks, many=True).data
    assert [row["id"] for row in data] == [str(task.pk) for task in tasks]
    assert [row["url"] for row in data] == [f"/api/tasks/{task.pk}/" for task in tasks]
    assert data == [drf_representation(TaskListSerializer, task) for task in tasks]


def test_events_with_and_without_an_actor(varied_tasks, owner):
    task = varied_tasks[0]
    TaskEvent.objects.create(task=task, from_status="", to_status="queued", actor=owner, message="Submitted")
    TaskEvent.objects.create(task=task, from_status="queued", to_status="running", worker="w1", attempt=1)
    for event in TaskEvent.objects.select_related("actor").filter(task=task):
        assert TaskEventSerializer(event).data == drf_representation(TaskEventSerializer, event)
    rendered = [TaskEventSerializer(event).data["actor"] for event in TaskEvent.objects.filter(task=task)]
    assert rendered == ["owner@example.com", None]


def test_a_serializer_with_a_nested_one_keeps_drfs_path(varied_tasks):
    assert TaskDetailSerializer._representation_plan() is None
    task = Task.objects.get(pk=varied_tasks[1].pk)
    data = TaskDetailSerializer(task).data
    assert data["files"] == [] and data["payload"]["nested"] == [1, None, {"a": "b"}]


def test_datetimes_follow_the_current_time_zone_as_drf_does(varied_tasks):
    task = Task.objects.select_related("owner").get(pk=varied_tasks[1].pk)
    with timezone.override("Europe/Berlin"):
        fast = TaskSerializer(task).data
        assert fast == drf_representation(TaskSerializer, task)
    assert fast["started_at"].endswith(("+01:00", "+02:00"))
    assert TaskSerializer(task).data["started_at"].endswith("Z")


SUBMISSIONS = [
    {"kind": "demo.noop", "payload": {"echo": 1}},
    {"kind": "demo.noop", "title": "t" * 201, "priority": "urgent", "max_retries": -1},
    {"kind": "demo.noop", "run_at": "not a date", "callback_url": "ftp://x", "timeout": 10**30},
    {"kind": "demo.noop", "surprise": 1, "id": "x"},
    {"title": "no kind", "payload": {"a": "\x00"}},
    ["not", "an", "object"],
    {},
]


def is_valid_outcome(data):
    serializer = TaskSubmitSerializer(data=data)
    if serializer.is_valid():
        return "valid", dict(serializer.validated_data)
    return "invalid", serializer.errors


def validated_data_outcome(data):
    try:
        return "valid", dict(validated_data(TaskSubmitSerializer, data))
    except serializers.ValidationError as exc:
        return "invalid", exc.detail


@pytest.mark.parametrize("data", SUBMISSIONS)
def test_the_prebuilt_submit_serializer_validates_as_a_fresh_one(data):
    # Twice: the second call must not see anything of the first.
    assert validated_data_outcome(data) == is_valid_outcome(data)
    assert validated_data_outcome(data) == is_valid_outcome(data)


def test_threads_validating_at_once_each_get_their_own_outcome():
    def check(index):
        data = SUBMISSIONS[index % len(SUBMISSIONS)]
        return validated_data_outcome(data) == is_valid_outcome(data)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(check, range(200)))


def test_each_thread_builds_the_serializer_once(monkeypatch):
    built = []
    original = TaskSubmitSerializer.get_fields

    def counting(self):
        built.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(TaskSubmitSerializer, "get_fields", counting)
    thread = threading.Thread(target=lambda: [validated_data_outcome(d) for d in SUBMISSIONS * 3])
    thread.start()
    thread.join()
    assert len(built) == 1
