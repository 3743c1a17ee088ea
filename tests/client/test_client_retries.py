"""Which answers the client sends again, and which it raises at once.

A 503 cannot be had from the real TaskFlow on demand, so a small HTTP server answers with the
statuses under test; the 429 paths are also tested against the real server (test_client_api).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskflow_client import RetryPolicy, ServiceUnavailable, TaskFlow
from taskflow_client.errors import retry_after_seconds

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01)


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request with the next (status, headers, body) of its script; records requests."""

    daemon_threads = True

    def __init__(self, answers):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.answers = list(answers)
        self.requests = []

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, body))
        status, headers, payload = self.server.answers.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture
def scripted():
    servers = []

    def start(*answers):
        server = ScriptedServer(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


UNAVAILABLE = (503, {"Retry-After": "0"}, {"error": {"code": "service_unavailable", "message": "Redis is down."}})
KIND = {"name": "demo.noop", "description": "", "queue": "default", "max_retries": 0, "timeout": 30,
        "payload_schema": {}}  # fmt: skip


def test_a_503_on_a_read_is_retried_until_it_answers(scripted):
    server = scripted(UNAVAILABLE, UNAVAILABLE, (200, {}, [KIND]))

    kinds = TaskFlow(server.url(), api_key="k", retry=FAST).kinds.list()

    assert [kind.name for kind in kinds] == ["demo.noop"]
    assert len(server.requests) == 3


def test_a_503_on_a_retry_by_hand_is_raised_not_sent_twice(scripted):
    server = scripted(UNAVAILABLE, UNAVAILABLE)

    with pytest.raises(ServiceUnavailable) as unavailable:
        TaskFlow(server.url(), api_key="k", retry=FAST).tasks.retry("some-task")

    assert unavailable.value.status == 503 and unavailable.value.message == "Redis is down."
    assert len(server.requests) == 1


def test_a_keyed_submit_is_sent_again_with_the_same_idempotency_key(scripted):
    server = scripted(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    with pytest.raises(ServiceUnavailable):
        TaskFlow(server.url(), api_key="k", retry=FAST).tasks.submit("demo.noop", {"n": 1})

    keys = {body["idempotency_key"] for _, _, body in server.requests}
    assert len(server.requests) == FAST.max_attempts and len(keys) == 1 and keys != {None}


def test_retry_after_reads_seconds_and_http_dates():
    import httpx

    def response(value):
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after_seconds(response("7")) == 7
    assert retry_after_seconds(response("Wed, 21 Oct 2015 07:28:00 GMT")) == 0  # in the past
    assert retry_after_seconds(response("soon")) is None
