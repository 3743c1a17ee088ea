"""The client's side of the live event stream, `GET /api/tasks/{id}/events/stream/`.

The other client tests use TaskFlow's own stream (and the polling fallback); these hold the
client to the parts of the contract a real server cannot be made to show on cue, with a small
HTTP server that speaks the protocol: a connection cut in the middle of a message,
`Last-Event-ID` on the reconnect, heartbeats, a clean end after the final event.
"""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskflow_client import AsyncTaskFlow, RetryPolicy, TaskFlow

TASK_ID = "7d5e7a55-9d0a-4b4b-8a53-0b4a3c7f6f11"
NOW = "2026-12-01T00:00:00Z"


def task_body(status: str) -> dict:
    fields = dict.fromkeys(("title", "queue", "progress_message", "error", "worker", "callback_url", "trigger"), "")
    return fields | {
        "id": TASK_ID, "url": "", "owner": "owner@example.com", "kind": "demo.sleep", "priority": "normal",
        "status": status, "attempts": 1, "max_retries": 3, "timeout": 60, "run_at": None, "idempotency_key": None,
        "progress": 100, "cancel_requested": False, "schedule": None, "created_at": NOW, "queued_at": NOW,
        "started_at": NOW, "finished_at": NOW, "updated_at": NOW, "result": {"slept": 1}, "files": [],
    }  # fmt: skip


def message(event_id: int, name: str, **data) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps({'task': TASK_ID, **data})}\n\n".encode()


def progress(percent: int, text: str) -> bytes:
    data = {"task": TASK_ID, "progress": percent, "progress_message": text}
    return f"event: progress\ndata: {json.dumps(data)}\n\n".encode()


# What the server sends on each connection, by the Last-Event-ID the client brings; then it
# closes the connection: a cut, unless the last event was final.
SCRIPT = {
    None: [
        b"retry: 50\n\n", message(1, "task", to_status="queued"), message(2, "task", to_status="running", attempt=1),
        b"event: progress\ndata: {\"progress\": 5",  # cut in the middle of a message
    ],
    "2": [
        b": keep-alive\n\n", progress(50, "step 1 of 2"),
        message(4, "task", to_status="succeeded", result={"slept": 1}), b"event: end\ndata: {}\n\n",
    ],
}  # fmt: skip


class StreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), StreamHandler)
        self.script = script
        self.seen_last_event_ids = []
        self.seen_authorization = set()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen_authorization.add(self.headers.get("Authorization"))
        if self.path == f"/api/tasks/{TASK_ID}/":
            body = json.dumps(task_body("succeeded")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        last_event_id = self.headers.get("Last-Event-ID")
        self.server.seen_last_event_ids.append(last_event_id)
        chunks = self.server.script[last_event_id]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def stream_server():
    server = StreamServer(SCRIPT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_cut_stream_is_resumed_with_last_event_id_and_loses_no_event(stream_server):
    with TaskFlow(stream_server.url(), api_key="k", retry=RetryPolicy(backoff_base=0.01)) as tf:
        events = list(tf.tasks.events(TASK_ID, timeout=30))

    assert [(e.id, e.type) for e in events] == [
        ("1", "queued"), ("2", "running"), (None, "progress"), ("4", "succeeded"),
    ]  # fmt: skip
    assert events[2].progress == 50 and events[2].message == "step 1 of 2" and events[1].attempt == 1
    assert stream_server.seen_last_event_ids == [None, "2"]
    assert stream_server.seen_authorization == {"Api-Key k"}


def test_wait_follows_the_stream_then_reads_the_final_task(stream_server):
    with TaskFlow(stream_server.url(), api_key="k", retry=RetryPolicy(backoff_base=0.01)) as tf:
        task = tf.tasks.wait(TASK_ID, timeout=30)

    assert task.status == "succeeded" and task.result == {"slept": 1}


def test_an_earlier_runs_final_event_in_the_replay_does_not_end_the_stream():
    script = {
        None: [message(1, "task", to_status="failed"), message(2, "task", to_status="queued")],
        "2": [message(3, "task", to_status="succeeded"), b"event: end\ndata: {}\n\n"],
    }
    server = StreamServer(script)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with TaskFlow(server.url(), api_key="k", retry=RetryPolicy(backoff_base=0.01)) as tf:
            types = [e.type for e in tf.tasks.events(TASK_ID, timeout=30)]
    finally:
        server.shutdown()
        server.server_close()

    assert types == ["failed", "queued", "succeeded"]


def test_the_async_client_resumes_the_stream_alike(stream_server):
    async def follow():
        async with AsyncTaskFlow(stream_server.url(), api_key="k", retry=RetryPolicy(backoff_base=0.01)) as tf:
            return [event.id async for event in tf.tasks.events(TASK_ID, timeout=30)]

    assert asyncio.run(follow()) == ["1", "2", None, "4"]
    assert stream_server.seen_last_event_ids == [None, "2"]
