"""Soak: mixed API traffic against gunicorn with a Celery worker, for a bounded time.

RELIABILITY_SOAK_SECONDS (45 by default; CI keeps the default) of submissions, bulk
submissions, lists, details, events, uploads, downloads and cancels from a few client
threads, with the test playing beat. Then: zero 5xx, zero lost tasks, and the resident
memory of the web and worker processes at the start and the end.
"""

import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest

from apps.accounts.services import api_key_create
from tests.support.processes import HttpResponse, http

from . import report
from .harness import account, drain, tree_rss_kib

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SOAK_SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "45"))
CLIENTS = 3
THINK_SECONDS = 0.02  # between two requests of a client: the worker keeps up with the submissions
# Memory may grow while caches and connection pools fill; a leak grows with the traffic.
RSS_GROWTH_ALLOWED = 1.5


def post_bytes(url: str, body: bytes, *, headers: dict) -> HttpResponse:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return HttpResponse(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, error.headers, error.read())


def multipart(name: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Traffic:
    """Client threads sending a weighted mix of requests until told to stop."""

    def __init__(self, web, key: str):
        self.web = web
        self.headers = {"Authorization": f"Api-Key {key}"}
        self.statuses = Counter()
        self.task_ids: list[str] = []
        self.file_ids: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def call(self, method, path, *, body: bytes | None = None, content_type: str = "", **kwargs):
        if body is not None:
            response = post_bytes(self.web.url(path), body, headers=self.headers | {"Content-Type": content_type})
        else:
            response = http(method, self.web.url(path), headers=self.headers, **kwargs)
        with self.lock:
            self.statuses[response.status] += 1
            if response.status >= 500:
                self.errors.append(f"{method} {path}: {response.status} {response.body[:200]!r}")
        return response

    def submit(self, rng):
        kind = rng.choice([{"kind": "demo.noop"}, {"kind": "demo.sleep", "payload": {"seconds": 0.05, "steps": 2}}])
        response = self.call("POST", "/api/tasks/", json_body={**kind, "max_retries": 5})
        if response.status == 201:
            with self.lock:
                self.task_ids.append(response.json()["id"])

    def bulk(self, rng):
        response = self.call("POST", "/api/tasks/bulk/", json_body={"tasks": [{"kind": "demo.noop"}] * 5})
        if response.status == 201:
            with self.lock:
                self.task_ids.extend(task["id"] for task in response.json()["tasks"])

    def read(self, rng):
        with self.lock:
            task_id = rng.choice(self.task_ids) if self.task_ids else None
        path = rng.choice(
            ["/api/tasks/?page_size=50", "/api/kinds/", "/api/auth/me/", "/api/files/", "/api/schedules/"]
            + ([f"/api/tasks/{task_id}/", f"/api/tasks/{task_id}/events/"] if task_id else [])
        )
        self.call("GET", path)

    def upload(self, rng):
        body, content_type = multipart(f"soak-{rng.random()}.csv", b"a,b\n1,2\n" * 50, "text/csv")
        response = self.call("POST", "/api/files/", body=body, content_type=content_type)
        if response.status == 201:
            file_id = response.json()["id"]
            with self.lock:
                self.file_ids.append(file_id)
            self.call("GET", f"/api/files/{file_id}/download/")

    def cancel(self, rng):
        with self.lock:
            task_id = rng.choice(self.task_ids[-20:]) if self.task_ids else None
        if task_id:
            self.call("POST", f"/api/tasks/{task_id}/cancel/", json_body={"reason": "soak"})

    def run(self, seed: int):
        rng = random.Random(seed)
        actions = [self.submit] * 4 + [self.bulk] + [self.read] * 6 + [self.upload] + [self.cancel]
        while not self.stop.wait(THINK_SECONDS):
            try:
                rng.choice(actions)(rng)
            except Exception as exc:  # a dropped connection counts as a failure too
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")


def test_a_soak_of_mixed_traffic_has_no_5xx_no_lost_task_and_stable_memory(owner, spawn_worker, spawn_web, fast_reaper):
    worker = spawn_worker(name="soak")
    web = spawn_web(workers=2, threads=4)
    _, key = api_key_create(user=owner, name="soak")
    traffic = Traffic(web, key)

    threads = [threading.Thread(target=traffic.run, args=(seed,), daemon=True) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(min(5, SOAK_SECONDS / 4))  # warm-up: imports, connections, caches
    web_start, worker_start = tree_rss_kib(web.process.pid), tree_rss_kib(worker.process.pid)
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        from apps.tasks import services

        services.reap_stale_tasks()  # beat
        time.sleep(2)
    traffic.stop.set()
    for thread in threads:
        thread.join(timeout=30)
    web_end, worker_end = tree_rss_kib(web.process.pid), tree_rss_kib(worker.process.pid)

    drain(traffic.task_ids, timeout=120)
    audit = account(traffic.task_ids)
    requests = sum(traffic.statuses.values())
    http_5xx = sum(count for status, count in traffic.statuses.items() if status >= 500)
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    figures = {
        **audit.figures(),
        "recovery_seconds": None,
        "duration_seconds": SOAK_SECONDS,
        "requests": requests,
        "statuses": {str(status): count for status, count in sorted(traffic.statuses.items())},
        "http_5xx": http_5xx,
        "tasks": audit.accepted,
        "web_rss_start_mib": mib(web_start),
        "web_rss_end_mib": mib(web_end),
        "worker_rss_start_mib": mib(worker_start),
        "worker_rss_end_mib": mib(worker_end),
    }
    figures["notes"] = (
        f"{SOAK_SECONDS:.0f} s, {requests} requests, {http_5xx} 5xx; RSS web {mib(web_start)} → "
        f"{mib(web_end)} MiB, worker {mib(worker_start)} → {mib(worker_end)} MiB"
    )
    report.record("soak", figures)

    assert traffic.errors == []
    assert http_5xx == 0
    assert audit.lost == 0 and audit.duplicated_runs == 0, audit.violations
    assert audit.violations == []
    assert web_end <= web_start * RSS_GROWTH_ALLOWED
    assert worker_end <= worker_start * RSS_GROWTH_ALLOWED
