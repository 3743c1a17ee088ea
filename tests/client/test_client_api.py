"""The Python client against a real TaskFlow: gunicorn, a Celery worker, PostgreSQL, Redis."""

import asyncio
import time
import uuid

import httpx
import pytest

from apps.tasks.models import Task as TaskRow
from taskflow_client import (
    AsyncTaskFlow,
    AuthenticationError,
    Conflict,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    TaskFlow,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from taskflow_client.models import Task
from tests.client.conftest import PASSWORD_FOR_CLIENT_TESTS
from tests.support.processes import free_port

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_submit_and_wait_returns_the_succeeded_task_with_its_result(owner, client_for):
    tf = client_for(owner)
    task = tf.tasks.submit("demo.sleep", {"seconds": 0.6, "steps": 3})
    assert task.status in ("queued", "running") and task.idempotency_key

    events = list(tf.tasks.events(task, timeout=60))

    assert [e.type for e in events if e.type != "progress"][-1] == "succeeded"
    assert events[-1].is_final
    final = tf.tasks.wait(task, timeout=30)  # already final: returns at once
    assert final.status == "succeeded" and final.result == {"slept": 0.6, "steps": 3}
    assert final.files == [] and final.finished_at is not None
    assert final.waiting_for == ""  # the detail's field (a final task waits for nothing)
    ids = [int(e.id) for e in events if e.id]
    assert ids == sorted(set(ids))  # every stored event once, in order


def test_events_resume_after_a_last_event_id_without_repeating_it(owner, client_for):
    tf = client_for(owner)
    task = tf.tasks.wait(tf.tasks.submit("demo.noop", {"echo": 1}), timeout=60)
    history = tf.tasks.history(task)
    assert len(history) >= 3  # queued, running, succeeded

    resumed = list(tf.tasks.events(task, last_event_id=str(history[0].id), timeout=30))

    assert [int(e.id) for e in resumed if e.id] == [row.id for row in history[1:]]
    assert resumed[-1].type == "succeeded"


def test_a_failed_task_is_waited_for_and_carries_its_error(owner, client_for):
    tf = client_for(owner)
    task = tf.tasks.submit("demo.fail", {"failures": 1, "message": "boom"}, max_retries=0)

    final = tf.tasks.wait(task, timeout=60)

    assert final.status == "failed"
    assert "boom" in final.error
    retried = tf.tasks.retry(final, reason="try again")
    assert retried.status == "queued"
    again = tf.tasks.wait(retried, timeout=60)  # not fooled by the first run's "failed" event
    assert again.status == "failed" and again.finished_at > final.finished_at
    replay = [event.type for event in tf.tasks.events(task, timeout=30)]
    assert replay.count("failed") == 2 and replay[-1] == "failed"


def test_wait_times_out_on_a_task_that_is_not_final(owner, client_for):
    tf = client_for(owner)
    task = tf.tasks.submit("demo.sleep", {"seconds": 30, "steps": 30}, run_at="2099-01-01T00:00:00Z")

    with pytest.raises(WaitTimeout):
        tf.tasks.wait(task, timeout=1.0)

    cancelled = tf.tasks.cancel(task, reason="not needed")
    assert cancelled.status == "cancelled"
    with pytest.raises(Conflict) as conflict:
        tf.tasks.cancel(task)
    assert conflict.value.status == 409 and conflict.value.code


def test_list_iterates_every_task_across_cursor_pages_with_filters(owner, other_user, client_for):
    tf = client_for(owner)
    made = tf.tasks.bulk([{"kind": "demo.noop", "payload": {"echo": i}, "run_at": "2099-01-01T00:00:00Z"}
                          for i in range(7)])  # fmt: skip
    client_for(other_user).tasks.submit("demo.noop", {}, run_at="2099-01-01T00:00:00Z")

    listed = list(tf.tasks.list(kind="demo.noop", status="pending", page_size=3))

    assert [t.id for t in listed] == [t.id for t in reversed(made)]  # newest first, 3 pages, only mine
    assert all(isinstance(t, Task) and t.payload is None for t in listed)  # the list leaves payloads out
    assert len(list(tf.tasks.list(limit=4, page_size=3))) == 4
    assert list(tf.tasks.list(status=["failed", "succeeded"], kind="demo.noop")) == []


def test_bulk_is_all_or_nothing_and_names_the_bad_item(owner, client_for):
    tf = client_for(owner)
    with pytest.raises(ValidationError) as invalid:
        tf.tasks.bulk([{"kind": "demo.noop"}, {"kind": "demo.sleep", "payload": {"seconds": -1}}])

    assert invalid.value.status == 400 and invalid.value.code == "invalid"
    assert "1" in invalid.value.fields["tasks"]
    assert TaskRow.objects.filter(owner=owner).count() == 0


def test_api_errors_are_typed_with_code_message_and_fields(owner, other_user, client_for, taskflow_server):
    tf = client_for(owner)
    others = client_for(other_user).tasks.submit("demo.noop", {}, run_at="2099-01-01T00:00:00Z")

    with pytest.raises(NotFound) as not_found:
        tf.tasks.get(others.id)
    assert not_found.value.status == 404
    with pytest.raises(ValidationError) as invalid:
        tf.tasks.submit("demo.sleep", {"seconds": -1, "nope": 1})
    assert set(invalid.value.fields) == {"payload"}
    assert "seconds" in str(invalid.value.fields["payload"]) and "nope" in str(invalid.value.fields["payload"])
    with pytest.raises(AuthenticationError) as unauthenticated:
        TaskFlow(taskflow_server.url(""), api_key="not-a-key").kinds.list()
    assert unauthenticated.value.status == 401


def test_a_submit_whose_answer_is_lost_is_sent_again_and_makes_one_task(owner, taskflow_server, api_key_for):
    """The first answer never reaches the client; the retry carries the same idempotency key."""

    class LoseFirstSubmitAnswer(httpx.HTTPTransport):
        lost = 0

        def handle_request(self, request):
            response = super().handle_request(request)
            if request.method == "POST" and request.url.path == "/api/tasks/" and not self.lost:
                response.read()  # the server committed the task
                self.lost += 1
                raise httpx.ReadError("connection reset after the request was sent", request=request)
            return response

    transport = LoseFirstSubmitAnswer()
    with TaskFlow(taskflow_server.url(""), api_key=api_key_for(owner), transport=transport,
                  retry=RetryPolicy(backoff_base=0.01)) as tf:  # fmt: skip
        task = tf.tasks.submit("demo.noop", {"echo": "once"}, run_at="2099-01-01T00:00:00Z")

    assert transport.lost == 1
    assert list(TaskRow.objects.filter(owner=owner).values_list("id", flat=True)) == [uuid.UUID(task.id)]


def test_an_unreachable_server_raises_after_the_retries(owner):
    requests = []
    tf = TaskFlow(f"http://127.0.0.1:{free_port()}", api_key="k", retry=RetryPolicy(max_attempts=3, backoff_base=0.01),
                  event_hooks={"request": [requests.append]})  # fmt: skip
    with pytest.raises(TransportError):
        tf.kinds.list()
    assert len(requests) == 3


def test_jwt_login_refreshes_an_expired_access_token_and_logs_in_again(owner, taskflow_server):
    tf = TaskFlow(taskflow_server.url(""), email=owner.email, password=PASSWORD_FOR_CLIENT_TESTS)
    assert tf.auth.me().email == owner.email
    credentials = tf._transport.credentials
    first_refresh = credentials.refresh

    credentials.access = "expired.or.revoked"  # the server answers 401: the client refreshes
    assert tf.auth.me().email == owner.email
    assert credentials.refresh != first_refresh  # rotated by the server

    credentials.access, credentials.refresh = "expired", first_refresh  # blacklisted by that rotation
    assert [k.name for k in tf.tasks.list()] == []  # refresh refused: logged in again with the password
    assert credentials.access != "expired"


def test_a_429_with_retry_after_is_waited_out(owner, start_web, server_env, api_key_for):
    web = start_web(server_env | {"RATE_LIMIT_USER": "2/s"})
    seen = []

    def record(response):
        seen.append((time.monotonic(), response.status_code, response.headers.get("Retry-After")))

    with TaskFlow(web.url(""), api_key=api_key_for(owner), event_hooks={"response": [record]}) as tf:
        for _ in range(6):
            assert tf.kinds.list()
        throttled = [i for i, (_, status, _) in enumerate(seen) if status == 429]
        assert throttled, "the burst should have been throttled"
        first = throttled[0]
        assert seen[first][2] is not None
        assert seen[first + 1][0] - seen[first][0] >= float(seen[first][2])  # it slept Retry-After
        assert [status for _, status, _ in seen].count(200) == 6

        impatient = TaskFlow(web.url(""), api_key=api_key_for(owner), retry=RetryPolicy(max_retry_after=0))
        with pytest.raises(RateLimited) as limited:
            for _ in range(5):
                impatient.kinds.list()
        assert limited.value.retry_after >= 1 and limited.value.code == "throttled"


def test_a_task_quota_is_raised_at_once_not_retried(owner, start_web, server_env, api_key_for):
    web = start_web(server_env | {"QUOTA_TASKS_NOT_FINAL": "2"})
    posts = []
    hooks = {"request": [lambda request: posts.append(request) if request.method == "POST" else None]}
    with TaskFlow(web.url(""), api_key=api_key_for(owner), event_hooks=hooks) as tf:
        for _ in range(2):
            tf.tasks.submit("demo.noop", {}, run_at="2099-01-01T00:00:00Z")
        with pytest.raises(QuotaExceeded) as quota:
            tf.tasks.submit("demo.noop", {}, run_at="2099-01-01T00:00:00Z")

    assert (quota.value.status, quota.value.quota, quota.value.limit, quota.value.current) == (
        429, "tasks_not_final", 2, 2,
    )  # fmt: skip
    assert len(posts) == 3
    assert TaskRow.objects.filter(owner=owner).count() == 2


def test_files_upload_multipart_and_presigned_then_download(owner, start_web, server_env, s3_storage, api_key_for,
                                                            tmp_path):  # fmt: skip
    web = start_web(server_env | s3_storage.env)
    small = tmp_path / "people.csv"
    small.write_bytes(b"name,age\nada,36\n")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    reports = []

    with TaskFlow(web.url(""), api_key=api_key_for(owner)) as tf:
        stored = tf.files.upload(small)
        presigned = tf.files.upload(big, presign_above=1024, progress=lambda done, total: reports.append((done, total)))
        saved = tf.files.download(presigned, tmp_path / "out.bin")
        named = tf.files.download(stored, tmp_path)  # a folder: the server's name
        listed = [f.id for f in tf.files.list()]

    assert (stored.name, stored.size, stored.state, stored.content_type) == ("people.csv", 16, "ready", "text/csv")
    assert presigned.state == "ready" and presigned.size == big.stat().st_size
    assert reports[-1] == (big.stat().st_size, big.stat().st_size)
    assert saved.read_bytes() == big.read_bytes()
    assert named.name == "people.csv" and named.read_bytes() == small.read_bytes()
    assert sorted(listed) == sorted([stored.id, presigned.id])
    assert len(s3_storage.object_keys()) == 2  # the presigned bytes went to the store, not through TaskFlow


def test_the_async_client_submits_waits_lists_and_raises_alike(owner, taskflow_server, api_key_for):
    api_key = api_key_for(owner)

    async def scenario():
        async with AsyncTaskFlow(taskflow_server.url(""), api_key=api_key) as tf:
            tasks = await asyncio.gather(*(tf.tasks.submit("demo.noop", {"echo": i}) for i in range(3)))
            finals = await asyncio.gather(*(tf.tasks.wait(task, timeout=60) for task in tasks))
            listed = [task.id async for task in tf.tasks.list(page_size=2)]
            events = [event.type async for event in tf.tasks.events(tasks[0], timeout=30)]
            with pytest.raises(NotFound):
                await tf.tasks.get(str(uuid.uuid4()))
            return tasks, finals, listed, events

    tasks, finals, listed, events = asyncio.run(scenario())

    assert sorted(f.result["echo"] for f in finals) == [0, 1, 2]
    assert sorted(listed) == sorted(t.id for t in tasks)
    assert events[-1] == "succeeded"


def test_schedules_are_created_previewed_run_and_deleted_from_both_clients(owner, client_for, taskflow_server,
                                                                           api_key_for):  # fmt: skip
    tf = client_for(owner)
    schedule = tf.schedules.create("nightly", "demo.noop", {"echo": "night"}, cron="30 2 * * *",
                                   timezone="Europe/Berlin", overlap_policy="skip")  # fmt: skip
    preview = tf.schedules.preview(schedule, count=3)
    run = tf.schedules.run(schedule, reason="now")
    paused = tf.schedules.update(schedule, enabled=False)
    api_key = api_key_for(owner)

    async def async_preview():
        async with AsyncTaskFlow(taskflow_server.url(""), api_key=api_key) as atf:
            return await atf.schedules.preview(schedule, count=3), [s.id async for s in atf.schedules.list()]

    async_times, listed = asyncio.run(async_preview())
    tf.schedules.delete(schedule)

    assert schedule.next_run_at is not None and schedule.next_run_at.tzinfo is not None
    assert len(preview) == 3 and "02:30" in preview[0].local
    assert [p.utc for p in async_times] == [p.utc for p in preview]
    assert listed == [schedule.id]
    assert run.trigger == "run_now" and run.schedule == schedule.id
    assert paused.enabled is False
    with pytest.raises(NotFound):
        tf.schedules.get(schedule)
