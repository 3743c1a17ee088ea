"""Helpers for TaskFlow's tests: real worker processes and polling."""

import os
import signal
import subprocess
import sys
import time
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

    def __init__(self, env: dict, concurrency: int = 2, name: str = "worker"):
        super().__init__(env, name)
        self.concurrency = concurrency

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
            "default,files,notify,celery",
        ]


class Beat(CeleryProcess):
    ready_marker = b"beat: Starting"

    def command(self) -> list[str]:
        state = Path(self.env["TASKFLOW_VAR_DIR"]) / f"{self.name}-schedule"
        return ["beat", "--loglevel", "INFO", "--max-interval", "1", "--pidfile=", "--schedule", str(state)]
