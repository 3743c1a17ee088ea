"""What the fault-injection suite is built from: a throwaway Redis, the load, the drain, the audit.

Everything here drives the real stack: PostgreSQL, redis-server and `celery worker`
processes. The test process plays the API (Django's test client on the test database) and
beat (it calls the reaper, as the periodic `taskflow.reap_stale_tasks` job does).
"""

import os
import signal
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import redis
from kombu import pools as kombu_pools

from apps.tasks import services
from apps.tasks.models import FINAL_STATUSES, Task, TaskEvent, TaskStatus
from taskflow_site.celery import app as celery_app
from tests.support.processes import free_port

BULK = "/api/tasks/bulk/"
# Workers started by this suite name their PostgreSQL connections, so the PostgreSQL fault
# terminates exactly those backends and never another engineer's (see terminate_backends).
APPLICATION_NAME_PREFIX = "taskflow-rel-"


# --- A Redis of our own -----------------------------------------------------------------------


class RedisServer:
    """A throwaway `redis-server` on a free port, without persistence, like the machine's own.

    Scenarios that restart or flush Redis use this one: the shared Redis on 6379 carries
    other test runs and must never be restarted or flushed.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10):
        log = self.directory / f"redis-{self.port}.log"
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self, sig=signal.SIGKILL):
        """SIGKILL by default: a crash, nothing written anywhere (there is no persistence anyway)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)

    def restart(self, down_for: float = 1.0):
        self.stop()
        time.sleep(down_for)
        return self.start()


def _reset_broker_pools():
    """Drop the test process's cached broker connections (the next publish connects anew).

    kombu keeps its pools in process-wide registries keyed by connection: reset those too,
    or the app would be handed the same (closed) pool again."""
    kombu_pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def broker_at(url: str, settings):
    """Point this process's publishing (apps.tasks.dispatch, the reaper) at another broker.

    dispatch.publish goes through the Celery app, whose configuration was read once from
    Django's settings: changing CELERY_BROKER_URL alone would not reach it.
    """
    previous = celery_app.conf.broker_url, celery_app.conf.broker_write_url
    _reset_broker_pools()
    # Publishing reads broker_write_url (which falls back to broker_url unless something set it).
    celery_app.conf.broker_url = celery_app.conf.broker_write_url = url
    settings.CELERY_BROKER_URL = url
    try:
        yield
    finally:
        _reset_broker_pools()
        celery_app.conf.broker_url, celery_app.conf.broker_write_url = previous


def worker_env_for(base_env: dict, *, role: str, redis_url: str | None = None) -> dict:
    """The shared worker environment, with named database connections and maybe another Redis."""
    env = dict(base_env)
    env["DATABASE_URL"] = f"{base_env['DATABASE_URL']}?application_name={APPLICATION_NAME_PREFIX}{role}"
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


# --- Processes ---------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (a Celery worker's pool processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing bracket.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def rss_kib(pid: int) -> int:
    """Resident memory of one process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its direct children (a worker and its pool)."""
    return rss_kib(pid) + sum(rss_kib(child) for child in child_pids(pid))


def terminate_backends(connection, *, role: str) -> int:
    """pg_terminate_backend for this suite's processes of one role, on the test database only."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = %s",
            [APPLICATION_NAME_PREFIX + role],
        )
        return cursor.fetchone()[0]


def backends(connection, *, role: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME_PREFIX + role],
        )
        return cursor.fetchone()[0]


# --- Load ----------------------------------------------------------------------------------------


def short_tasks(count: int, *, label: str, long_every: int = 20) -> list[dict]:
    """`count` demo.noop tasks; every `long_every`-th is a demo.sleep of half a second in 5
    steps, so that a fault finds runs in progress. Five retries: a run lost to a fault is retried."""
    items = []
    for index in range(count):
        if long_every and index % long_every == 0:
            kind, payload = "demo.sleep", {"seconds": 0.5, "steps": 5}
        else:
            kind, payload = "demo.noop", {"echo": index}
        items.append({"kind": kind, "title": f"{label} {index}", "payload": payload, "max_retries": 5})
    return items


def submit(client, items: list[dict], *, batch: int = 50) -> list[str]:
    """Submit through the API in bulk requests; every request must be accepted (201)."""
    ids = []
    for start in range(0, len(items), batch):
        response = client.post(BULK, {"tasks": items[start : start + batch]}, format="json")
        assert response.status_code == 201, response.content[:500]
        ids.extend(task["id"] for task in response.json()["tasks"])
    return ids


def unfinished(ids) -> int:
    return Task.objects.filter(pk__in=ids).exclude(status__in=FINAL_STATUSES).count()


def drain(ids, *, timeout: float, reap_every: float = 0.5) -> float:
    """Play beat until every task is final; returns the seconds it took."""
    started = time.monotonic()
    while True:
        services.reap_stale_tasks()
        if not unfinished(ids):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            statuses = Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
            pytest.fail(f"{unfinished(ids)} task(s) not final after {timeout}s: {dict(statuses)}")
        time.sleep(reap_every)


# --- Accounting ------------------------------------------------------------------------------------


@dataclass
class Accounting:
    """What became of a scenario's tasks, from the tasks and their TaskEvents."""

    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0  # accepted but not final
    duplicated_runs: int = 0  # a run that started while another run of the task was open, or a 2nd success
    runs: int = 0
    runs_lost: int = 0  # runs ended by the reaper because their lease expired (WorkerLost)
    reruns: int = 0  # runs after a task's first
    violations: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def figures(self) -> dict:
        figures = asdict(self)
        figures["completed"] = self.completed
        figures["violations"] = self.violations[:20]
        return figures


RUN_START = {TaskStatus.QUEUED, TaskStatus.RETRYING}


def account(ids) -> Accounting:
    """Audit every task: final, never two runs open at once, at most one success, attempts
    equal to the runs recorded, and the task's status equal to its last event."""
    result = Accounting(accepted=len(ids))
    tasks = {str(task.pk): task for task in Task.objects.filter(pk__in=ids).only("id", "status", "attempts")}
    events: dict[str, list] = {key: [] for key in tasks}
    # In the order they were written (ids come from a sequence at INSERT). created_at can
    # invert two transitions of a row: the worker's finish (one UPDATE+INSERT statement)
    # stamps its event before it waits for the row lock a concurrent cancel holds.
    rows = (
        TaskEvent.objects.filter(task_id__in=ids)
        .order_by("task_id", "id")
        .values_list("task_id", "created_at", "from_status", "to_status", "attempt", "message")
    )
    for task_id, *row in rows:
        events[str(task_id)].append(row)

    for key in ids:
        task = tasks.get(str(key))
        if task is None:
            result.lost += 1
            result.violations.append(f"{key}: accepted, but the row is gone")
            continue
        if task.status not in FINAL_STATUSES:
            result.lost += 1
            result.violations.append(f"{key}: still {task.status}")
        result.succeeded += task.status == TaskStatus.SUCCEEDED
        result.failed += task.status == TaskStatus.FAILED
        result.cancelled += task.status == TaskStatus.CANCELLED

        open_run = None
        runs = successes = 0
        for created_at, from_status, to_status, attempt, message in events[str(key)]:
            if to_status == TaskStatus.RUNNING and from_status in RUN_START:
                runs += 1
                if open_run is not None:
                    result.duplicated_runs += 1
                    result.violations.append(f"{key}: run {attempt} started at {created_at} while run {open_run} ran")
                if attempt != runs:
                    result.violations.append(f"{key}: run #{runs} recorded as attempt {attempt}")
                open_run = attempt
            elif from_status == TaskStatus.RUNNING and to_status != TaskStatus.RUNNING:
                if open_run is None:
                    result.violations.append(f"{key}: a run ended ({to_status}) that never started")
                open_run = None
                if message.startswith("WorkerLost"):
                    result.runs_lost += 1
            if to_status == TaskStatus.SUCCEEDED:
                successes += 1
        if successes > 1:
            result.duplicated_runs += successes - 1
            result.violations.append(f"{key}: succeeded {successes} times")
        if runs != task.attempts:
            result.violations.append(f"{key}: attempts={task.attempts} but {runs} run(s) recorded")
        last = events[str(key)][-1][2] if events[str(key)] else None
        if last != task.status:
            history = [
                (str(at.time()), f"{fr or '-'}>{to}", message[:40]) for at, fr, to, _, message in events[str(key)]
            ]
            result.violations.append(f"{key}: status {task.status} but the last event says {last}: {history}")
        result.runs += runs
        result.reruns += max(runs - 1, 0)
    return result
