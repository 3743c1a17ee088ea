from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.tasks import services
from apps.tasks.models import Task, TaskEvent, TaskStatus
from tests.support.callbacks import besides_live_notices

pytestmark = pytest.mark.django_db

TASKS = "/api/tasks/"


def submit(client, **data):
    return client.post(TASKS, {"kind": "demo.noop", **data}, format="json")


def make_task(owner, **fields) -> Task:
    defaults = {"kind": "demo.noop", "title": "demo.noop", "status": TaskStatus.QUEUED, "queued_at": timezone.now()}
    return Task.objects.create(owner=owner, **(defaults | fields))


def test_submit_creates_a_queued_task_with_an_event_and_dispatches_after_commit(
    owner_api, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(owner_api, payload={"echo": {"n": 1}}, title="first", priority="high")
    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == f"http://testserver/api/tasks/{body['id']}/"
    task = Task.objects.get(pk=body["id"])
    assert (task.owner, task.status, task.priority, task.title) == (owner, "queued", "high", "first")
    assert task.payload == {"echo": {"n": 1}}
    assert task.max_retries == 0 and task.timeout == 30  # the kind's defaults
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.actor) == ("", "queued", owner)
    assert len(besides_live_notices(callbacks)) == 1


def test_submit_of_an_unknown_kind_lists_the_known_kinds(owner_api):
    response = submit(owner_api, kind="no.such.kind")
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["kind"][0]
    assert "Unknown kind 'no.such.kind'" in message
    assert "demo.sleep" in message
    assert "demo.crash" not in message  # staff-only kinds stay hidden from owners
    assert not Task.objects.exists()


def test_submit_with_an_invalid_payload_names_the_field(owner_api):
    response = submit(owner_api, kind="demo.sleep", payload={"seconds": -1, "steps": "many"})
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]["payload"]
    assert set(fields) == {"seconds", "steps"}
    assert not Task.objects.exists()


@pytest.mark.parametrize("payload", [[1], "x", 5, True])
def test_submit_with_a_payload_that_is_not_an_object_is_a_400(owner_api, payload):
    response = submit(owner_api, kind="demo.sleep", payload=payload)
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["payload"] == {
        "non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(payload).__name__}."]
    }
    assert not Task.objects.exists()


def test_invalid_and_unknown_payload_keys_are_named_together_and_the_next_payload_is_judged_alone(owner_api):
    response = submit(owner_api, kind="demo.sleep", payload={"seconds": -1, "bogus": 1})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]["payload"]) == {"seconds", "bogus"}
    response = submit(owner_api, kind="demo.sleep", payload={"seconds": 0.5})
    assert response.status_code == 201
    assert response.json()["payload"] == {"seconds": 0.5, "steps": 10}
    assert Task.objects.count() == 1


def test_submit_with_a_payload_over_256_kb_is_a_413(owner_api):
    response = submit(owner_api, payload={"echo": "x" * (256 * 1024)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Task.objects.exists()


def test_submit_with_malformed_json_is_a_400(owner_api):
    response = owner_api.post(TASKS, data='{"kind": "demo.noop",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_submit_by_an_anonymous_caller_is_a_401(api):
    assert submit(api).status_code == 401
    assert not Task.objects.exists()


def test_same_idempotency_key_returns_the_first_task(owner_api):
    first = submit(owner_api, payload={"echo": 1}, idempotency_key="order-42")
    again = submit(owner_api, payload={"echo": 1}, idempotency_key="order-42")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Task.objects.count() == 1


def test_same_idempotency_key_with_another_payload_is_a_409(owner_api):
    submit(owner_api, payload={"echo": 1}, idempotency_key="order-42")
    response = submit(owner_api, payload={"echo": 2}, idempotency_key="order-42")
    assert response.status_code == 409
    assert Task.objects.count() == 1


def test_idempotency_keys_are_per_owner(owner_api, other_api):
    assert submit(owner_api, idempotency_key="k").status_code == 201
    assert submit(other_api, idempotency_key="k").status_code == 201
    assert Task.objects.count() == 2


def test_a_future_run_at_waits_pending_until_the_dispatcher_queues_it(owner_api, django_capture_on_commit_callbacks):
    run_at = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(owner_api, run_at=run_at.isoformat())
    assert response.json()["status"] == "pending"
    assert besides_live_notices(callbacks) == []  # no far-future ETA message goes to the broker
    task = Task.objects.get()
    assert services.dispatch_due_tasks(now=timezone.now()) == 0
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.dispatch_due_tasks(now=run_at - timedelta(seconds=30)) == 1
    task.refresh_from_db()
    assert task.status == "queued"
    assert len(besides_live_notices(callbacks)) == 1
    assert list(task.events.values_list("to_status", flat=True)) == ["pending", "queued"]


def test_bulk_submit_creates_every_task_in_one_go(owner_api, django_capture_on_commit_callbacks):
    items = [{"kind": "demo.noop", "payload": {"echo": i}} for i in range(25)]
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_api.post(f"{TASKS}bulk/", {"tasks": items}, format="json")
    assert response.status_code == 201
    assert len(response.json()["tasks"]) == 25
    assert Task.objects.filter(status="queued").count() == 25
    assert TaskEvent.objects.count() == 25
    assert len(besides_live_notices(callbacks)) == 1  # one publish batch for the whole request


def test_a_list_without_filter_parameters_builds_no_filter_form(owner_api, owner, monkeypatch):
    from apps.tasks.filters import TaskFilter

    built = []
    original = TaskFilter.__init__
    monkeypatch.setattr(TaskFilter, "__init__", lambda self, *a, **kw: built.append(1) or original(self, *a, **kw))
    make_task(owner)
    assert len(owner_api.get(TASKS).json()["results"]) == 1
    assert built == []
    assert owner_api.get(TASKS, {"status": "failed"}).json()["results"] == []
    assert built == [1]


def test_bulk_submit_with_one_invalid_item_creates_nothing_and_names_the_item(owner_api):
    items = [{"kind": "demo.noop"}, {"kind": "demo.sleep", "payload": {"seconds": "soon"}}, {"kind": "nope"}]
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": items}, format="json")
    assert response.status_code == 400
    errors = response.json()["error"]["fields"]["tasks"]
    assert set(errors) == {"1", "2"}
    assert "seconds" in errors["1"]["payload"]
    assert "kind" in errors["2"]
    assert not Task.objects.exists()


def test_bulk_submit_over_the_limit_is_refused(owner_api, settings):
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": [{"kind": "demo.noop"}] * 1001}, format="json")
    assert response.status_code == 400
    assert not Task.objects.exists()


def test_owner_lists_only_their_own_tasks_newest_first(owner_api, owner, other_user):
    older = make_task(owner, title="older")
    newer = make_task(owner, title="newer")
    make_task(other_user, title="not mine")
    response = owner_api.get(TASKS)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [str(newer.id), str(older.id)]


def test_list_filters_by_several_statuses_kind_and_search(owner_api, owner):
    failed = make_task(owner, status="failed", title="nightly report")
    make_task(owner, status="succeeded", title="nightly sync")
    cancelled = make_task(owner, status="cancelled", kind="demo.sleep", title="other")
    ids = lambda r: {t["id"] for t in r.json()["results"]}  # noqa: E731
    assert ids(owner_api.get(TASKS, {"status": ["failed", "cancelled"]})) == {str(failed.id), str(cancelled.id)}
    assert ids(owner_api.get(TASKS, {"kind": "demo.sleep"})) == {str(cancelled.id)}
    assert ids(owner_api.get(TASKS, {"search": "REPORT"})) == {str(failed.id)}


def test_staff_see_every_task_and_can_filter_by_owner(staff_api, owner, other_user):
    mine = make_task(owner)
    make_task(other_user)
    assert len(staff_api.get(TASKS).json()["results"]) == 2
    response = staff_api.get(TASKS, {"owner": "owner@example.com"})
    assert [t["id"] for t in response.json()["results"]] == [str(mine.id)]


def test_the_list_query_count_does_not_grow_with_the_page(owner_api, owner):
    for _ in range(3):
        make_task(owner)
    with CaptureQueriesContext(connection) as small:
        assert len(owner_api.get(TASKS).json()["results"]) == 3
    for _ in range(30):
        make_task(owner)
    with CaptureQueriesContext(connection) as large:
        assert len(owner_api.get(TASKS, {"page_size": 30}).json()["results"]) == 30
    assert len(large.captured_queries) == len(small.captured_queries)
    # Neither the bulky fields the list leaves out nor the owner's other columns are read.
    [page_query] = [q["sql"] for q in large.captured_queries if 'FROM "tasks_task"' in q["sql"]]
    for column in ('"payload"', '"result"', '"traceback"', '"password"', '"full_name"'):
        assert column not in page_query, column
    assert '"accounts_user"."email"' in page_query


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("get", "events/"), ("post", "retry/"), ("post", "cancel/")],
)
def test_another_users_task_is_a_404_everywhere(other_api, owner, method, suffix):
    task = make_task(owner, status="failed")
    response = getattr(other_api, method)(f"{TASKS}{task.id}/{suffix}", format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    task.refresh_from_db()
    assert task.status == "failed"


def test_detail_shows_payload_result_and_error(owner_api, owner):
    task = make_task(owner, status="failed", payload={"echo": 1}, error="Boom: x", traceback="Traceback ...")
    body = owner_api.get(f"{TASKS}{task.id}/").json()
    assert (body["payload"], body["error"], body["traceback"]) == ({"echo": 1}, "Boom: x", "Traceback ...")


def test_owner_retry_of_a_failed_task_requeues_it_with_a_fresh_attempt_count(
    owner_api, owner, django_capture_on_commit_callbacks
):
    task = make_task(owner, status="failed", attempts=4, error="Boom", finished_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_api.post(f"{TASKS}{task.id}/retry/", {"reason": "fixed the input"}, format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error, task.finished_at) == ("queued", 0, "", None)
    event = task.events.get()
    assert (event.from_status, event.to_status, event.actor) == ("failed", "queued", owner)
    assert event.message == "Retried by hand: fixed the input"
    assert len(besides_live_notices(callbacks)) == 1


@pytest.mark.parametrize("status", ["queued", "running", "succeeded", "pending", "retrying"])
def test_retry_is_a_conflict_unless_the_task_failed_or_was_cancelled(owner_api, owner, status):
    task = make_task(owner, status=status)
    response = owner_api.post(f"{TASKS}{task.id}/retry/", format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    task.refresh_from_db()
    assert task.status == status


@pytest.mark.parametrize("status", ["pending", "queued", "retrying"])
def test_cancel_of_a_waiting_task_is_immediate(owner_api, owner, status):
    task = make_task(owner, status=status)
    response = owner_api.post(f"{TASKS}{task.id}/cancel/", {"reason": "not needed"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    event = Task.objects.get(pk=task.pk).events.get()
    assert (event.from_status, event.to_status, event.message) == (status, "cancelled", "Cancelled: not needed")


def test_cancel_of_a_running_task_asks_it_to_stop(owner_api, owner):
    task = make_task(owner, status="running")
    response = owner_api.post(f"{TASKS}{task.id}/cancel/", format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.status, task.cancel_requested) == ("running", True)
    assert task.events.get().message == "Cancel requested"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_of_a_finished_task_is_a_conflict(owner_api, owner, status):
    task = make_task(owner, status=status)
    assert owner_api.post(f"{TASKS}{task.id}/cancel/", format="json").status_code == 409


def test_hard_cancel_is_for_operators_only(owner_api, staff_api, owner):
    task = make_task(owner, status="running")
    assert owner_api.post(f"{TASKS}{task.id}/cancel/", {"hard": True}, format="json").status_code == 403
    task.refresh_from_db()
    assert task.status == "running"
    response = staff_api.post(f"{TASKS}{task.id}/cancel/", {"hard": True}, format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.status, task.run_id) == ("cancelled", None)


def test_events_list_the_history_with_actors(owner_api, owner):
    task = make_task(owner, status="queued")
    owner_api.post(f"{TASKS}{task.id}/cancel/", format="json")
    owner_api.post(f"{TASKS}{task.id}/retry/", format="json")
    events = owner_api.get(f"{TASKS}{task.id}/events/").json()
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in events] == [
        ("queued", "cancelled", "owner@example.com"),
        ("cancelled", "queued", "owner@example.com"),
    ]


def test_kinds_list_their_payload_schema_and_defaults(owner_api, staff_api):
    kinds = {k["name"]: k for k in owner_api.get("/api/kinds/").json()}
    assert {"demo.noop", "demo.sleep", "demo.fail", "notify.email"} <= set(kinds)
    assert "demo.crash" not in kinds
    sleep = kinds["demo.sleep"]
    assert sleep["payload_schema"]["properties"]["seconds"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 3600,
        "default": 5,
    }
    assert sleep["timeout"] == 3600
    assert kinds["notify.email"]["payload_schema"]["required"] == ["subject", "body"]
    assert "demo.crash" in {k["name"] for k in staff_api.get("/api/kinds/").json()}
