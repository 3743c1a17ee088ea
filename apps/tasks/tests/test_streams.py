"""Live task events over server-sent events: the history replayed, then live, on the real servers."""

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from apps.tasks import dashboard, live, services
from apps.tasks.models import Task, TaskEvent
from apps.tasks.streams import CountsStream
from apps.tasks.submission import TaskSpec, task_submit
from conftest import client_for
from tests.support.processes import procfile_streams_command, uvicorn_command, wait_for
from tests.support.sse import EventStream, close_streamed, parse_frames


def submitted(owner, kind="demo.noop", payload=None) -> Task:
    task, _ = task_submit(owner=owner, spec=TaskSpec(kind=kind, payload=payload or {"echo": 1}))
    return task


def run_to_success(task: Task, result) -> None:
    claimed = services.task_claim(task_id=task.pk, worker="test-worker")
    services.task_report_progress(task=claimed, progress=50, message="half way")
    services.task_succeed(task=claimed, result=result)


def stream_url(task) -> str:
    return f"/api/tasks/{task.pk}/events/stream/"


# --- The contract, in process (the WSGI path) -------------------------------------------------


@pytest.mark.django_db
def test_a_finished_tasks_stream_replays_its_history_with_ids_and_ends(owner, owner_api):
    task = submitted(owner)
    run_to_success(task, {"answer": 42})
    response = owner_api.get(stream_url(task), HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = parse_frames(b"".join(response.streaming_content).decode())
    history = list(TaskEvent.objects.filter(task=task).order_by("id"))
    entries = [event for event in events if event.event == "task"]
    assert [event.id for event in entries] == [entry.pk for entry in history]
    assert [event.data["to_status"] for event in entries] == ["queued", "running", "succeeded"]
    assert entries[1].data["attempt"] == 1 and entries[1].data["message"] == "Attempt 1"
    assert entries[2].data["result"] == {"answer": 42}
    assert events[-1].event == "end" and events[-1].data == {"task": str(task.pk), "status": "succeeded"}


@pytest.mark.django_db
def test_last_event_id_replays_only_what_came_after_it(owner, owner_api):
    task = submitted(owner)
    run_to_success(task, {"answer": 42})
    first = TaskEvent.objects.filter(task=task).order_by("id").first()
    response = owner_api.get(stream_url(task), HTTP_LAST_EVENT_ID=str(first.pk))
    events = parse_frames(b"".join(response.streaming_content).decode())
    assert [event.data["to_status"] for event in events if event.event == "task"] == ["running", "succeeded"]


@pytest.mark.django_db
def test_a_stream_answers_like_the_api_for_strangers_and_bad_input(owner, owner_api, other_api, api):
    task = submitted(owner)
    assert other_api.get(stream_url(task)).status_code == 404
    assert api.get(stream_url(task)).status_code == 401
    bad = owner_api.get(stream_url(task), HTTP_LAST_EVENT_ID="12; DROP")
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["Last-Event-ID"]
    assert owner_api.get("/api/tasks/events/stream/?status=bogus").status_code == 400


@pytest.mark.django_db
def test_open_streams_per_user_are_capped_and_a_closed_one_gives_its_slot_back(owner, owner_api, settings):
    settings.STREAMS_PER_USER = 1
    task = submitted(owner)
    run_to_success(task, {})
    held = owner_api.get(stream_url(task))
    assert held.status_code == 200
    refused = owner_api.get(stream_url(task))
    assert refused.status_code == 429 and "At most 1 open streams" in refused.json()["error"]["message"]
    close_streamed(held)
    again = owner_api.get(stream_url(task))
    assert again.status_code == 200
    close_streamed(again)


def test_a_wake_up_reaches_only_the_streams_on_its_own_redis_database(settings):
    """Redis pub/sub ignores database numbers; the channel's name carries it instead."""
    own = settings.REDIS_URL
    base, _, number = own.rpartition("/")
    other = f"{base}/{(int(number or 0) + 1) % 16}"
    assert live._channel_for(other) != live.channel()
    listener = live.SyncListener(["task:1"])
    try:
        assert listener._pubsub.get_message(timeout=5)["type"] == "subscribe"
        # In this order: a listener that heard the other database would get its message first.
        redis.Redis.from_url(other).publish(live._channel_for(other), "task:1 other-database")
        redis.Redis.from_url(own).publish(live.channel(), "task:1 own-database")
        message = listener._pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message["data"] == b"task:1 own-database"
    finally:
        listener.close()


# --- For real: uvicorn, a worker, the connection cut mid-task --------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_live_stream_under_uvicorn_shows_progress_and_survives_a_reconnect(owner, web_env, start_web, celery_worker):
    # One stream at a time: the reconnect below gets in only once the server gave the cut
    # connection's slot back (it would otherwise wait for the slot to expire, 30 s).
    web = start_web(web_env | {"STREAMS_PER_USER": "1"}, uvicorn_command(), name="streams")
    headers = {"Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}", "Accept": "text/event-stream"}
    task = submitted(owner, "demo.sleep", {"seconds": 3, "steps": 3})

    first = EventStream(web.url(stream_url(task)), headers=headers)
    assert first.status == 200
    seen = list(first.events(until=lambda event: event.event == "progress"))
    first.close()  # the connection cut mid-task
    last_id = max(event.id for event in seen if event.id is not None)

    def reconnect():
        stream = EventStream(web.url(stream_url(task)), headers={**headers, "Last-Event-ID": str(last_id)})
        if stream.status == 200:
            return stream
        assert stream.status == 429
        stream.close()
        return None

    second = wait_for(reconnect, timeout=5, interval=0.2, message="the cut stream's slot to come back")
    rest = list(second.events(until=lambda event: event.event == "end", timeout=40))
    second.close()

    history = [entry.pk for entry in TaskEvent.objects.filter(task=task).order_by("id")]
    ids = [event.id for event in seen + rest if event.id is not None]
    assert ids == history  # every entry once, none lost across the reconnect
    assert [e.data["to_status"] for e in seen + rest if e.event == "task"] == ["queued", "running", "succeeded"]
    assert rest[-1].event == "end" and rest[-1].data["status"] == "succeeded"
    progress = [event.data["progress"] for event in seen + rest if event.event == "progress"]
    assert progress and progress == sorted(progress) and max(progress) > 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_owners_stream_carries_only_their_tasks_filtered_by_status(
    owner, other_user, web_env, start_web, celery_worker
):
    web = start_web(web_env, uvicorn_command(), name="owner-stream")
    token = RefreshToken.for_user(owner).access_token
    stream = EventStream(web.url("/api/tasks/events/stream/?status=succeeded"), {"Authorization": f"Bearer {token}"})
    assert stream.status == 200
    received = []
    reader = threading.Thread(
        target=lambda: received.extend(stream.events(until=lambda event: len(received) >= 1, timeout=40)),
        daemon=True,
    )
    reader.start()
    time.sleep(1)  # the stream starts from now
    theirs = submitted(other_user)
    mine = submitted(owner)
    wait_for(lambda: not reader.is_alive(), timeout=45, message="the owner's stream to deliver")
    stream.close()
    assert [(event.data["task"], event.data["to_status"]) for event in received] == [(str(mine.pk), "succeeded")]
    assert Task.objects.get(pk=theirs.pk).owner == other_user


@pytest.mark.django_db(transaction=True)
def test_a_stopping_streams_process_ends_its_streams_cleanly_and_gives_their_slots_back(
    owner, web_env, start_web, redis_client
):
    web = start_web(web_env, procfile_streams_command(), name="streams-stop")  # the deployed command
    token = RefreshToken.for_user(owner).access_token
    stream = EventStream(web.url("/api/tasks/events/stream/"), {"Authorization": f"Bearer {token}"})
    assert stream.status == 200
    slots = f"taskflow:streams:user:{owner.pk}"
    assert redis_client.zcard(slots) == 1
    os.killpg(web.process.pid, signal.SIGTERM)  # as Kubernetes and compose stop it
    # The response ends (a cut connection would raise): the client reconnects, elsewhere.
    assert list(stream.events(timeout=30)) == []
    stream.close()
    web.process.wait(timeout=30)  # uvicorn then ends itself by the signal it got (-15)
    assert redis_client.zcard(slots) == 0  # at once, not when the slot would expire
    log = web.read_log()
    assert '"event": "stream_closed"' in log and '"cut": true' in log
    assert "Application shutdown complete" in log and "Exception in ASGI application" not in log


# --- The staff's counts stream (the admin dashboard) ------------------------------------------

COUNTS_URL = "/api/tasks/counts/stream/"


def first_counts(response) -> dict:
    """The counts a stream sends on connect (its first frames), then the stream is closed."""
    chunks = iter(response.streaming_content)
    text = ""
    while "event: counts" not in text:
        text += next(chunks).decode()
    close_streamed(response)
    (counts,) = [event for event in parse_frames(text) if event.event == "counts"]
    assert counts.id is None  # a state, not history: nothing to resume from
    return counts.data


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "status"),
    [("staff", 200), ("operator", 200), ("viewer", 200), ("bare_staff", 403), ("owner", 403), ("anonymous", 401)],
)
def test_every_tasks_counts_stream_is_for_staff_who_may_see_every_task(role, status, request, make_user):
    if role == "anonymous":
        client = APIClient()
    elif role == "bare_staff":  # staff, but in no role: the admin shows them no task either
        client = client_for(make_user("bare@example.com", is_staff=True))
    else:
        client = client_for(request.getfixturevalue(role))
    response = client.get(COUNTS_URL, HTTP_ACCEPT="text/event-stream")
    assert response.status_code == status
    if status == 200:
        assert response["Content-Type"] == "text/event-stream"
        close_streamed(response)
    else:
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.django_db
def test_the_counts_stream_opens_with_the_dashboards_status_table(owner, other_user, staff_api):
    submitted(owner)
    submitted(other_user)
    run_to_success(submitted(owner), {})
    cache.delete(dashboard.COUNTS_KEY)
    counts = first_counts(staff_api.get(COUNTS_URL))
    statuses = counts["statuses"]
    assert list(statuses) == [str(status) for status in dashboard.STATUS_ORDER]
    assert statuses["queued"] == {"live": 2, "hour": 2, "day": 2, "week": 2}  # every owner's
    assert statuses["running"]["live"] == 0 and statuses["succeeded"]["live"] is None
    assert counts["computed_at"]


@pytest.mark.django_db
def test_the_counts_stream_sends_the_table_again_only_when_it_changed(owner):
    stream = CountsStream()
    cache.delete(dashboard.COUNTS_KEY)
    assert [frame.split("\n", 1)[0] for frame in stream.start()] == ["retry: 5000", "event: counts"]
    assert stream.read() == []  # nothing changed
    submitted(owner)
    cache.delete(dashboard.COUNTS_KEY)  # as COUNTS_SECONDS later
    (sent,) = parse_frames("".join(stream.read()))
    assert sent.data["statuses"]["queued"]["live"] == 1
    assert stream.read() == []


@pytest.mark.django_db(transaction=True)
def test_the_counts_stream_under_uvicorn_wakes_on_any_owners_change(staff, owner, web_env, start_web):
    web = start_web(web_env, uvicorn_command(), name="counts-stream")
    token = RefreshToken.for_user(staff).access_token
    stream = EventStream(web.url(COUNTS_URL), {"Authorization": f"Bearer {token}"})
    assert stream.status == 200
    (opened,) = stream.events(until=lambda event: event.event == "counts")
    assert opened.data["statuses"]["pending"]["live"] == 0
    # Someone else's task, due in an hour (waiting even if a worker of another test runs):
    # the Redis wake-up after its commit.
    later = timezone.now() + timedelta(hours=1)
    task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={"echo": 1}, run_at=later))
    (changed,) = stream.events(until=lambda event: event.event == "counts", timeout=15)
    stream.close()
    assert changed.data["statuses"]["pending"]["live"] == 1
    assert changed.data["computed_at"] > opened.data["computed_at"]


@pytest.mark.django_db(transaction=True)
def test_a_browsers_session_opens_streams_under_uvicorn_as_the_admin_pages_do(staff, owner, web_env, start_web, client):
    web = start_web(web_env, uvicorn_command(), name="session-streams")
    client.force_login(staff)
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"}
    counts = EventStream(web.url(COUNTS_URL), cookie)
    assert counts.status == 200
    assert [event.event for event in counts.events(until=lambda event: event.event == "counts")] == ["counts"]
    counts.close()
    # Someone else's task, due in an hour (no worker of another test takes it): staff see its stream.
    later = timezone.now() + timedelta(hours=1)
    task, _ = task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={"echo": 1}, run_at=later))
    history = EventStream(web.url(stream_url(task)), cookie)
    assert history.status == 200
    (entry,) = history.events(until=lambda event: event.event == "task")
    history.close()
    assert entry.id == TaskEvent.objects.get(task=task).pk and entry.data["task"] == str(task.pk)
    client.logout()
    refused = EventStream(web.url(COUNTS_URL), cookie)  # the session is gone
    assert refused.status == 401
    refused.close()
