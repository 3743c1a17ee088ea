"""The embedded default for real: SQLite, the on-disk broker, a celery worker and beat, gunicorn.

Started as `make run` starts it (tests/embedded/stack.py) and driven only over HTTP, as a
newcomer's first session would: log in as the demo user, run tasks, retry, cancel, schedule.
"""

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.cookiejar import CookieJar

import pytest
from django.utils import timezone

from tests.support.processes import http, wait_for
from tests.support.sse import EventStream

from .stack import EmbeddedStack

pytestmark = pytest.mark.embedded

DEMO_EMAIL, DEMO_PASSWORD = "admin@taskflow.local", "taskflow-admin"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = EmbeddedStack(tmp_path_factory.mktemp("embedded-var"))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def headers(stack):
    """The demo staff user's credentials: a JWT from /api/auth/token/."""
    response = http("POST", stack.url("/api/auth/token/"), json_body={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status == 200, response.body
    return {"Authorization": f"Bearer {response.json()['access']}"}


@pytest.fixture(scope="module")
def call(stack, headers):
    """An HTTP call to the stack as the demo staff user."""

    def call(method: str, path: str, body=None):
        return http(method, stack.url(path), headers=headers, json_body=body)

    return call


def submit(call, **body) -> dict:
    response = call("POST", "/api/tasks/", body)
    assert response.status == 201, response.body
    return response.json()


def final_state(call, task_id: str, timeout: float = 30) -> dict:
    def finished():
        task = call("GET", f"/api/tasks/{task_id}/").json()
        return task if task["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, timeout=timeout, interval=0.3, message=f"task {task_id} to finish")


def test_the_landing_page_and_the_health_checks_answer(stack):
    landing = http("GET", stack.url("/"))
    assert landing.status == 200
    assert b">embedded<" in landing.body and b"SQLite" in landing.body
    assert http("GET", stack.url("/healthz")).status == 200
    ready = http("GET", stack.url("/readyz"))
    assert ready.status == 200, ready.body
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}


def test_a_submitted_task_runs_on_the_worker_and_succeeds(call):
    task = submit(call, kind="demo.noop", payload={"echo": "hello"})
    finished = final_state(call, task["id"])
    assert finished["status"] == "succeeded", finished
    assert finished["result"] == {"echo": "hello"}


def test_the_web_process_serves_live_streams_itself_reading_the_table(stack, call, headers):
    # No streams process and no Redis here: gunicorn's WSGI fallback, polling SQLite.
    counts = EventStream(stack.url("/api/tasks/counts/stream/"), headers)
    assert counts.status == 200
    (opened,) = counts.events(until=lambda event: event.event == "counts")
    task = submit(call, kind="demo.sleep", payload={"seconds": 1, "steps": 2})
    events = EventStream(stack.url(f"/api/tasks/{task['id']}/events/stream/"), headers)
    assert events.status == 200
    seen = list(events.events(until=lambda event: event.event == "end", timeout=30))
    events.close()
    assert [event.data["to_status"] for event in seen if event.event == "task"][-1] == "succeeded"
    assert seen[-1].data == {"task": task["id"], "status": "succeeded"}
    changed = next(counts.events(until=lambda event: event.event == "counts", timeout=10))
    counts.close()
    assert changed.data["computed_at"] > opened.data["computed_at"]


def test_a_failing_task_is_retried_automatically_and_then_succeeds(call):
    task = submit(call, kind="demo.fail", payload={"failures": 1})
    finished = final_state(call, task["id"])
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 2
    events = [event["to_status"] for event in call("GET", f"/api/tasks/{task['id']}/events/").json()]
    assert "retrying" in events


def test_a_task_that_has_not_started_is_cancelled(call):
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    task = submit(call, kind="demo.noop", run_at=later)
    response = call("POST", f"/api/tasks/{task['id']}/cancel/", {"reason": "changed my mind"})
    assert response.status == 200, response.body
    assert call("GET", f"/api/tasks/{task['id']}/").json()["status"] == "cancelled"


def test_a_schedule_run_now_starts_a_task_that_succeeds(call):
    response = call(
        "POST", "/api/schedules/", {"name": "nightly", "kind": "demo.noop", "cron": "30 2 * * *", "payload": {}}
    )
    assert response.status == 201, response.body
    run = call("POST", f"/api/schedules/{response.json()['id']}/run/", {"reason": "try it"})
    assert run.status == 201, run.body
    assert final_state(call, run.json()["id"])["status"] == "succeeded"


def test_tasks_submitted_by_several_clients_at_once_all_succeed_without_waiting_on_the_broker(call):
    # Four web threads and two worker processes writing to the one SQLite file together.
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        tasks = list(pool.map(lambda n: submit(call, kind="demo.noop", payload={"n": n}), range(24)))
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda task: final_state(call, task["id"], timeout=45)["status"], tasks))
    assert statuses == ["succeeded"] * len(tasks)
    # With kombu's default polling (1 s) each of the worker's two slots ran one task a second:
    # 12 s for these; about 2 s since settings poll the queue folder every 0.1 s.
    assert time.monotonic() - started < 8


def test_tasks_are_found_by_payload_and_result_on_sqlite_too(call):
    run = uuid.uuid4().hex  # this test's tasks only
    echoes = [{"customer": 42, "run": run}, {"customer": "42", "run": run}, {"customer": 43, "run": run, "tags": ["x"]}]
    tasks = [submit(call, kind="demo.noop", payload={"echo": echo}) for echo in echoes]
    for task in tasks:
        assert final_state(call, task["id"])["status"] == "succeeded"

    def found(parameter: str, template: dict, extra: str = "") -> list[str]:
        response = call("GET", f"/api/tasks/?{parameter}={urllib.parse.quote(json.dumps(template))}{extra}")
        assert response.status == 200, response.body
        return [task["id"] for task in response.json()["results"]]

    number, text, tagged = (task["id"] for task in tasks)
    assert found("payload_contains", {"echo": {"customer": 42, "run": run}}) == [number]
    assert found("payload_contains", {"echo": {"customer": "42", "run": run}}) == [text]
    assert found("result_contains", {"echo": {"tags": ["x"], "run": run}}) == [tagged]
    assert found("result_contains", {"echo": {"customer": 44, "run": run}}) == []
    assert found("payload_contains", {"echo": {"run": run}}, "&status=succeeded&kind=demo.noop") == [
        tagged,
        text,
        number,
    ]
    walked, path = (
        [],
        f"/api/tasks/?page_size=2&payload_contains={urllib.parse.quote(json.dumps({'echo': {'run': run}}))}",
    )
    while path:
        page = call("GET", path).json()
        walked += [task["id"] for task in page["results"]]
        path = page["next"] and urllib.parse.urlsplit(page["next"])._replace(scheme="", netloc="").geturl()
    assert walked == [tagged, text, number]
    refused = call("GET", "/api/tasks/?payload_contains=%5B42%5D")
    assert refused.status == 400
    assert list(refused.json()["error"]["fields"]) == ["payload_contains"]


def admin_session(stack):
    """A browser-like opener signed in to the admin as the demo user (session cookie, CSRF token)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login_page = opener.open(stack.url("/admin/login/"), timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    form = {"csrfmiddlewaretoken": token, "username": DEMO_EMAIL, "password": DEMO_PASSWORD, "next": "/admin/"}
    signed_in = opener.open(stack.url("/admin/login/"), data=urllib.parse.urlencode(form).encode(), timeout=30)
    assert signed_in.url == stack.url("/admin/"), "the demo user could not sign in to the admin"
    return opener


def test_the_demo_user_works_in_the_admin_task_list_task_page_dashboard_and_schedules(stack, call):
    task = submit(call, kind="demo.noop", payload={"echo": "admin"})
    final_state(call, task["id"])
    opener = admin_session(stack)
    for path in [
        "/admin/tasks/task/",
        f"/admin/tasks/task/{task['id']}/change/",
        "/admin/tasks/task/dashboard/",
        "/admin/tasks/schedule/",
    ]:
        with opener.open(stack.url(path), timeout=30) as response:
            assert response.status == 200, path
    workers = opener.open(stack.url("/admin/tasks/task/dashboard/workers/"), timeout=30).read().decode()
    assert "Worker inspection needs Redis as the broker" in workers


def test_the_dashboard_counts_finished_tasks_from_its_rollups_on_sqlite(stack, call):
    for n in range(2):
        final_state(call, submit(call, kind="demo.noop", payload={"echo": n})["id"])
    succeeded, url = 0, "/api/tasks/?status=succeeded"
    while url:
        page = call("GET", url).json()
        succeeded += len(page["results"])
        url = page["next"] and page["next"].split(stack.url(""), 1)[-1]
    opener = admin_session(stack)
    # ?refresh=1 brings the rollups up to date in the request (beat does it every 10 s).
    html = opener.open(stack.url("/admin/tasks/task/dashboard/?refresh=1"), timeout=30).read().decode()
    assert "Finished-task figures from the rollups as of" in html
    shown = re.search(r"Finished per minute, last hour <small>([\d,]+) succeeded", html)
    assert shown and int(shown.group(1).replace(",", "")) == succeeded >= 2


def test_no_process_met_a_locked_database(stack):
    # Last in the module: web, worker and beat have all written to the one SQLite file by now.
    assert "database is locked" not in stack.read_log()
