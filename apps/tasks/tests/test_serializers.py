"""The task representation built from cached fields (apps/core/serializers.py) is DRF's own, and
the prebuilt submit serializer validates as a fresh one."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from apps.core.serializers import validated_data
from apps.tasks.models import FINAL_STATUSES, Schedule, Task, TaskEvent, TaskPriority, TaskStatus, TaskTrigger
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


# --- The list's rows (TaskViewSet.list renders values() rows, not model instances) -----------

ODD_TEXT = 'Ünïcode 🚀 مرحبا e\u0301 \u200b\u2028 tab\tnew\nline \\ " </script> \U0001f9ea'
BIG = 2_147_483_647  # the largest PositiveIntegerField PostgreSQL stores


@pytest.fixture
def tasks_in_every_state(owner, staff):
    """One task per status, priority and trigger, with odd values, nulls and set values."""
    now = timezone.now()
    schedule = Schedule.objects.create(owner=owner, name="hourly", kind="demo.noop", interval_seconds=3600)
    priorities, triggers = list(TaskPriority), list(TaskTrigger)
    tasks = []
    for index, status in enumerate(TaskStatus):
        odd = index % 2 == 0
        tasks.append(
            Task.objects.create(
                owner=staff if odd else owner,
                kind=f"demo.{status}",
                title=ODD_TEXT if odd else "",
                status=status,
                priority=priorities[index % len(priorities)],
                trigger=triggers[index % len(triggers)],
                schedule=schedule if odd else None,
                attempts=BIG if odd else 0,
                max_retries=BIG if odd else 0,
                timeout=BIG if odd else 1,
                progress=100 if odd else 0,
                progress_message=ODD_TEXT if odd else "",
                error=ODD_TEXT * 3 if status == TaskStatus.FAILED else "",
                worker="celery@höst" if odd else "",
                idempotency_key=f"këy-{index}" if odd else None,
                cancel_requested=odd,
                callback_url="https://example.com/höök?a=1&b=2" if odd else "",
                run_at=now + timedelta(days=3650, microseconds=1) if odd else None,
                queued_at=now if status != TaskStatus.PENDING else None,
                started_at=now - timedelta(microseconds=index) if odd else None,
                finished_at=now.replace(microsecond=0) if status in FINAL_STATUSES else None,
            )
        )
    # A date far in the past, at a whole second, and one past 2038.
    Task.objects.filter(pk=tasks[0].pk).update(created_at=datetime(1, 1, 2, tzinfo=UTC))
    Task.objects.filter(pk=tasks[1].pk).update(created_at=datetime(2100, 6, 30, 23, 59, 59, tzinfo=UTC))
    return tasks


def rows_and_instances(serializer):
    ids = Task.objects.order_by("created_at", "id").values_list("pk", flat=True)
    rows = list(Task.objects.filter(pk__in=ids).order_by("created_at", "id").values(*serializer.row_plan()[0]))
    instances = list(Task.objects.select_related("owner").filter(pk__in=ids).order_by("created_at", "id"))
    return rows, instances


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Pacific/Kiritimati"])
def test_list_rows_render_as_the_serializer_renders_instances(tasks_in_every_state, rf, settings, zone):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    request = Request(rf.get("/api/tasks/", HTTP_HOST="api.example.com"))
    serializer = TaskListSerializer(context={"request": request})
    rows, instances = rows_and_instances(serializer)
    assert len(rows) == len(TaskStatus)
    with timezone.override(zone):
        from_rows = serializer.render_rows(rows)
        from_instances = TaskListSerializer(instances, many=True, context={"request": request}).data
        drf_own = [drf_representation(TaskListSerializer, task) for task in instances]
    assert from_rows == from_instances
    # DRF's own path, fields built afresh (its url has no request: the path alone).
    for row, drf in zip(from_rows, drf_own, strict=True):
        assert row["url"] == f"http://api.example.com{drf.pop('url')}"
        assert {key: value for key, value in row.items() if key != "url"} == drf
    assert [list(row) for row in from_rows] == [TaskListSerializer.Meta.fields] * len(rows)  # order too
    # The JSON is the same text, odd values included.
    assert JSONRenderer().render(from_rows) == JSONRenderer().render(from_instances)
    odd = next(row for row in from_rows if row["title"] == ODD_TEXT)
    assert odd["attempts"] == BIG and odd["idempotency_key"].startswith("këy-")
    plain = next(row for row in from_rows if row["title"] == "")
    assert plain["run_at"] is None and plain["schedule"] is None and plain["idempotency_key"] is None
    if zone == "UTC":
        assert from_rows[0]["created_at"] == "0001-01-02T00:00:00Z"


def test_a_serializer_that_needs_instances_cannot_render_rows():
    with pytest.raises(TypeError):
        TaskDetailSerializer.row_plan()
