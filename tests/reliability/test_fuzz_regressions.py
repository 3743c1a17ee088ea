"""What the fuzzing and the fault injection found, pinned one finding per test.

Fuzzing (schemathesis, test_fuzz.py):
1. No operation documented its errors: every 401, 404, 429... was "undocumented".
2. `created_after=0191-11-14T06:19:20.582+19:01` reached PostgreSQL as given, which refuses
   offsets past ±15:59: a 500. Offsets pushing a date past the calendar: an OverflowError.
3. `page_size=false` (or `page_size=`) quietly gave a default-sized page instead of a 400.
4. `?status=`, `?state=`, `?created_after=` (empty values) quietly listed everything.
Fault injection (test_faults.py):
5. While Redis was down, each submit took about 6 s: the failed publish was logged with a
   full traceback, and rendering it cost more than the publish attempt itself.
6. The reaper re-published every stale task of a backlog as soon as the broker held a few
   fewer messages than that (workers hold some): 370 messages for 250 tasks. And its loop
   over queues ran once per stale task (the model's ordering joined the DISTINCT).
Abuse (test_abuse.py):
7. JSON nested 100,000 levels deep: a RecursionError, a 500. Now a 400 past 100 levels.
8. A body over DATA_UPLOAD_MAX_MEMORY_SIZE, or thousands of form parts: Django's HTML
   "Bad Request" page. Now JSON: a 413, and a 400 naming the limit.
"""

import logging
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks import dispatch, services
from apps.tasks.models import Task, TaskStatus
from apps.tasks.tests.test_services import broker_messages
from tests.support.processes import free_port

from .harness import broker_at

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api):
    return api.get("/api/schema/?format=json").json()


def test_every_operation_documents_its_errors_in_the_one_error_shape(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("401", "403", "404", "429"):
                assert responses[status]["content"]["application/json"]["schema"] == error, (method, path, status)
            if method in ("post", "put", "patch"):
                assert {"400", "413", "415"} <= set(responses), (method, path)


def test_a_date_filter_with_an_offset_postgresql_refuses_is_answered_not_a_500(owner_api, owner):
    Task.objects.create(owner=owner, kind="demo.noop")
    response = owner_api.get("/api/tasks/", {"created_after": "0191-11-14T06:19:20.582+19:01"})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+10:00", "9999-12-31T23:59:59-10:00"])
def test_a_date_filter_past_the_calendar_is_a_400(owner_api, value):
    response = owner_api.get("/api/tasks/", {"created_before": value})
    assert response.status_code == 400
    assert "created_before" in response.json()["error"]["fields"]


@pytest.mark.parametrize("value", ["false", "", "0", "-1", "1.5", "٣"])
def test_a_page_size_that_is_not_a_whole_number_from_1_is_a_400(owner_api, value):
    response = owner_api.get("/api/tasks/", {"page_size": value})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"page_size": ["A whole number from 1 to 100."]}


def test_a_page_size_above_the_maximum_is_capped(owner_api, owner):
    Task.objects.bulk_create([Task(owner=owner, kind="demo.noop") for _ in range(101)])
    response = owner_api.get("/api/tasks/", {"page_size": "1000"})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 100


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/tasks/", "status"),
        ("/api/tasks/", "priority"),
        ("/api/tasks/", "created_after"),
        ("/api/files/", "state"),
    ],
)
def test_an_empty_filter_value_is_a_400_not_no_filter(owner_api, path, parameter):
    response = owner_api.get(path, {parameter: ""})
    assert response.status_code == 400
    assert parameter in response.json()["error"]["fields"]


def test_a_free_text_filter_may_be_empty(owner_api):
    assert owner_api.get("/api/tasks/", {"search": "", "kind": ""}).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_submit_while_the_broker_is_down_is_quick_and_logs_one_line(owner_api, settings, caplog):
    with broker_at(f"redis://127.0.0.1:{free_port()}/0", settings), caplog.at_level(logging.WARNING):
        started = time.monotonic()
        response = owner_api.post("/api/tasks/", {"kind": "demo.noop"}, format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert Task.objects.get().status == TaskStatus.QUEUED  # the reaper publishes it later
    assert elapsed < 3
    records = [r for r in caplog.records if r.name == "apps.tasks.dispatch"]
    assert len(records) == 1
    assert "broker unreachable" in records[0].getMessage()
    assert records[0].exc_info is None


@pytest.mark.django_db(transaction=True)
def test_the_reaper_publishes_only_what_the_broker_is_missing(owner, own_redis, settings):
    settings.TASK_REDISPATCH_AFTER = 1
    long_ago = timezone.now() - timedelta(minutes=5)
    tasks = Task.objects.bulk_create(
        [Task(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=long_ago) for _ in range(30)]
    )
    with broker_at(own_redis.url, settings):
        dispatch.publish(tasks[:10])  # 10 wake-ups still waiting, 20 lost
        assert services.reap_stale_tasks()["redispatched"] == 20
        assert broker_messages(own_redis.client(), "default") == 30
        assert services.reap_stale_tasks()["redispatched"] == 0  # nothing is missing any more
