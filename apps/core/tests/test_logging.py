"""Structured logs: request ids on every request's lines, and the submitting request's id in the worker."""

import json
import logging
import re

import pytest
import structlog
from rest_framework_simplejwt.tokens import RefreshToken

from apps.core.logging import logging_config
from apps.tasks.models import Task
from tests.support.processes import Worker, gunicorn_command, http, wait_for

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(text: str) -> list[dict]:
    """The structlog lines of a process's output (gunicorn's own lines and banners are not JSON)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.django_db(transaction=True)
def test_a_request_writes_one_json_line_with_the_request_id_user_id_client_ip_and_duration(owner, web_env, start_web):
    web = start_web(web_env, gunicorn_command(workers=2, access_log=False))
    headers = {
        "Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}",
        "X-Request-ID": "client-42.a_b",
        "User-Agent": "taskflow-test/1.0",
    }
    response = http("GET", web.url("/api/auth/me/"), headers=headers)
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "client-42.a_b"

    lines = wait_for(
        lambda: [line for line in json_lines(web.read_log()) if line.get("request_id") == "client-42.a_b"],
        timeout=10,
        message="the request's log lines",
    )
    assert [line["event"] for line in lines] == ["request_finished"], "one line per request at INFO"
    finished = lines[0]
    assert finished["user_id"] == owner.pk
    assert finished["code"] == 200
    assert finished["request"] == "GET /api/auth/me/"
    assert finished["ip"] == "127.0.0.1"
    assert finished["user_agent"] == "taskflow-test/1.0"
    assert isinstance(finished["duration_ms"], float) and finished["duration_ms"] > 0
    assert finished["level"] == "info" and finished["timestamp"].endswith("Z")
    assert "/api/auth/me/" not in "\n".join(line for line in web.read_log().splitlines() if not line.startswith("{")), (
        "no access log line besides the JSON one"
    )


@pytest.mark.django_db
def test_a_sane_incoming_request_id_is_kept_and_echoed(api):
    response = api.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.9_x")
    assert response["X-Request-ID"] == "lb-7f3a.9_x"


@pytest.mark.django_db
def test_every_response_gets_a_request_id_even_without_one_incoming(api):
    first, second = api.get("/healthz"), api.get("/api/kinds/")
    assert GENERATED_ID.fullmatch(first["X-Request-ID"])
    assert GENERATED_ID.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
@pytest.mark.parametrize("incoming", ["two words", "x" * 129, "id\r\nSet-Cookie: a=b", "<script>", "ü-id", ""])
def test_an_incoming_request_id_that_is_not_sane_is_replaced_by_a_new_one(api, incoming):
    response = api.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert GENERATED_ID.fullmatch(response["X-Request-ID"])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_tasks_worker_log_lines_carry_its_id_kind_and_the_submitting_request_id(owner, owner_api, worker_env):
    worker = Worker(worker_env | {"LOG_FORMAT": "json"}, name="json-log-worker").start()
    try:
        response = owner_api.post(
            "/api/tasks/",
            {"kind": "demo.fail", "payload": {"failures": 1}},
            format="json",
            HTTP_X_REQUEST_ID="submit-7",
        )
        assert response.status_code == 201
        assert response["X-Request-ID"] == "submit-7"
        task_id = response.json()["id"]
        wait_for(lambda: Task.objects.filter(pk=task_id, status="succeeded").exists(), message="the task to succeed")

        def task_lines():
            lines = [line for line in json_lines(worker.read_log()) if line.get("task_id") == task_id]
            ended = [line for line in lines if line["event"] == "task_run_finished"]
            return lines if len(ended) == 2 else None

        lines = wait_for(task_lines, timeout=10, message="the task's log lines")
    finally:
        worker.stop()
    # One line per run at INFO, its outcome as TaskFlow sees it: the first attempt failed and
    # was retried, the second succeeded. Starts, publishes and Celery's own per-task lines
    # (which would call both runs a success) need LOG_LEVEL=debug.
    runs = [line for line in lines if line["event"] == "task_run_finished"]
    assert [(run["attempt"], run["status"], run["level"]) for run in runs] == [
        (1, "retrying", "warning"),
        (2, "succeeded", "info"),
    ]
    assert runs[0]["error"] == "DemoFailure: demo failure (attempt 1 of 1 failing)" and "error" not in runs[1]
    assert all(isinstance(run["duration_ms"], int) for run in runs)
    events = {line["event"] for line in lines}
    assert not events & {"task_started", "task_enqueued", "task_succeeded"}, events
    assert not [line for line in lines if line["logger"] in ("celery.app.trace", "celery.worker.strategy")]
    for line in lines:
        assert line["request_id"] == "submit-7", line
        assert line["task_kind"] == "demo.fail", line
        assert line["user_id"] == owner.pk, line


def test_console_lines_are_readable_and_carry_the_bound_context(capsys):
    config = logging_config(log_format="console", level="INFO")
    formatter = structlog.stdlib.ProcessorFormatter(
        **{k: v for k, v in config["formatters"]["structured"].items() if k != "()"}
    )
    record = logging.LogRecord("apps.tasks.executor", logging.INFO, __file__, 1, "task %s claimed", ("abc",), None)
    structlog.contextvars.bind_contextvars(request_id="r-1", task_kind="demo.noop")
    try:
        line = formatter.format(record)
    finally:
        structlog.contextvars.clear_contextvars()
    assert not line.startswith("{")
    assert "task abc claimed" in line
    assert "request_id=r-1" in line and "task_kind=demo.noop" in line
    assert "[apps.tasks.executor]" in line


@pytest.mark.parametrize(
    ("level", "celery_lines"), [("DEBUG", "DEBUG"), ("INFO", "WARNING"), ("WARNING", "WARNING"), ("ERROR", "ERROR")]
)
def test_celerys_per_task_lines_come_back_only_with_debug(level, celery_lines):
    loggers = logging_config(log_format="json", level=level)["loggers"]
    assert loggers["celery.app.trace"]["level"] == celery_lines
    assert loggers["celery.worker.strategy"]["level"] == celery_lines
    assert loggers["celery"]["level"] == level
