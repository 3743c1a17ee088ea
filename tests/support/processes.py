"""Helpers for TaskFlow's tests: real worker and web server processes, HTTP, polling."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class CeleryProcess:
    """A real `celery` process (worker or beat) on the test database and the test Redis."""

    ready_marker = b""

    def __init__(self, env: dict, name: str):
        self.env = env
        self.name = name
        self.process = None
        self.log_path = Path(env["TASKFLOW_VAR_DIR"]) / f"{name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (kept open for the process lifetime)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "--app", "taskflow_site", *self.command()],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.read_log()}")
            if self.ready_marker in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self, sig=signal.SIGKILL):
        """Signal the whole process group: the main process and its pool children."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


def wait_for(predicate, timeout=30.0, interval=0.1, message="condition"):
    """Poll until predicate() is truthy; return its value or fail with `message`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Worker(CeleryProcess):
    ready_marker = b" ready."

    # Every queue, webhooks' too: one test worker does what the deployment splits in two.
    QUEUES = "default,files,notify,celery,webhooks"

    def __init__(self, env: dict, concurrency: int = 2, name: str = "worker", queues: str | None = None):
        super().__init__(env, name)
        self.concurrency = concurrency
        self.queues = queues or self.QUEUES

    def command(self) -> list[str]:
        hostname = f"{self.name}-{os.getpid()}-{time.monotonic_ns()}@localhost"
        return [
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "--queues",
            self.queues,
        ]


class Beat(CeleryProcess):
    ready_marker = b"beat: Starting"

    def command(self) -> list[str]:
        state = Path(self.env["TASKFLOW_VAR_DIR"]) / f"{self.name}-schedule"
        return ["beat", "--loglevel", "INFO", "--max-interval", "1", "--pidfile=", "--schedule", str(state)]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HttpResponse:
    status: int
    headers: Message  # case-insensitive: headers["Content-Type"]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, *, headers: dict | None = None, json_body=None, timeout: float = 30) -> HttpResponse:
    """One HTTP request on a new connection; error statuses are returned, not raised."""
    data = None
    headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, error.headers, error.read())


class WebServer:
    """A real HTTP server process (gunicorn or uvicorn) on a free port, on the test database."""

    def __init__(self, env: dict, command: list[str], name: str = "web"):
        self.env = env
        self.port = free_port()
        self.command = [arg.replace("{port}", str(self.port)) for arg in command]
        self.name = name
        self.process = None
        self.log_path = Path(env["TASKFLOW_VAR_DIR"]) / f"{name}-{self.port}.log"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 60):
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (kept open for the process lifetime)
        self.process = subprocess.Popen(
            self.command, cwd=BASE_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.read_log()}")
            try:
                if http("GET", self.url("/healthz"), timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /healthz:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process and self.process.poll() is None:
            # SIGINT: gunicorn's and uvicorn's quick shutdown (no waiting on idle keep-alives).
            # gunicorn's master still waits up to its graceful timeout (30 s) for a worker
            # thread busy with a connection a test client left open (seen after the soak):
            # nothing a test checks depends on it, so not longer than a few seconds.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if getattr(self, "log", None):
            self.log.close()


def gunicorn_command(
    *, workers: int = 2, threads: int = 4, worker_class: str = "gthread", access_log: bool = True
) -> list[str]:
    """The deployed web command (deploy/gunicorn.conf.py) on 127.0.0.1, with the serving pid
    logged in an access log (serving_pids) unless access_log is False (the deployed default).

    worker_class "sync" handles one connection per process at a time, so that concurrent
    requests are certain to reach every worker.
    """
    access = ["--access-logfile", "-", "--access-logformat", "access pid=%(p)s status=%(s)s %(m)s %(U)s"]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "deploy/gunicorn.conf.py",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        worker_class,
        *(access if access_log else []),
        "taskflow_site.wsgi",
    ]


def serving_pids(log: str) -> set[str]:
    """The gunicorn worker pids in an access log written with gunicorn_command's format."""
    return {line.split()[1] for line in log.splitlines() if line.startswith("access pid=")}


def uvicorn_command(*, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "taskflow_site.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--no-access-log",
    ]


def procfile_streams_command() -> list[str]:
    """The Procfile's streams line as deployed (uvicorn, its options), on 127.0.0.1 and a test port."""
    line = next(line for line in (BASE_DIR / "Procfile").read_text().splitlines() if line.startswith("streams:"))
    command = shlex.split(line.split(":", 1)[1])
    assert command[0] == "uvicorn", line
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "{port}"
    return [sys.executable, "-m", *command]


@contextmanager
def process_starter(make):
    """`start(...)` builds a process with `make(...)`, starts it, and every one is stopped at the end."""
    started = []

    def start(*args, **kwargs):
        process = make(*args, **kwargs).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()
