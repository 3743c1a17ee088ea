"""Fault injection under load: no accepted task lost, none run twice at once, figures reported.

Each scenario submits a few hundred short tasks through the API to real `celery worker`
processes on PostgreSQL and Redis, breaks something on purpose in the middle, plays beat
(the reaper, every half second; workers hold 3-second leases, see conftest.worker_env)
until every task is final, then audits the tasks and their TaskEvents (harness.account).
The figures go to docs/reliability.json and the table in docs/reliability.md.

Scenarios that restart, flush or stop Redis do it to a redis-server of their own, never to
the shared one; the PostgreSQL scenario terminates only this suite's named connections.
"""

import os
import signal
import time

import pytest
from django.db import connection

from apps.accounts.services import api_key_create
from apps.tasks.models import Task, TaskStatus
from tests.support.processes import http, wait_for

from . import report
from .harness import (
    account,
    backends,
    broker_at,
    child_pids,
    drain,
    short_tasks,
    submit,
    terminate_backends,
    unfinished,
)

# slow: the module takes a minute and a half in all.
pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LOAD = 200
DRAIN_TIMEOUT = 120


def anchors(count: int, *, seconds: float = 2.0) -> list[dict]:
    """Long-ish tasks submitted first, so that a fault is sure to find runs in progress."""
    return [
        {
            "kind": "demo.sleep",
            "title": f"anchor {index}",
            "payload": {"seconds": seconds, "steps": int(seconds * 4)},
            "max_retries": 5,
        }
        for index in range(count)
    ]


def running(ids) -> int:
    return Task.objects.filter(pk__in=ids, status=TaskStatus.RUNNING, progress__gt=0).count()


def settle(key: str, ids: list[str], *, fault_at: float, notes: str = "", **extra) -> dict:
    """Drain, audit, record the figures, and hold the scenario to the rules."""
    drain(ids, timeout=DRAIN_TIMEOUT)
    recovery = time.monotonic() - fault_at
    audit = account(ids)
    figures = audit.figures() | {"recovery_seconds": round(recovery, 1), "notes": notes, **extra}
    if audit.runs_lost and "runs lost" not in notes:
        figures["notes"] = "; ".join(filter(None, [notes, f"{audit.runs_lost} runs lost and re-run"]))
    report.record(key, figures)
    assert audit.lost == 0, audit.violations
    assert audit.duplicated_runs == 0, audit.violations
    assert audit.violations == []
    return figures


def test_sigkill_of_a_pool_child_mid_task_loses_nothing(owner_api, spawn_worker, fast_reaper):
    worker = spawn_worker(name="child-kill")
    ids = submit(owner_api, anchors(2))
    wait_for(lambda: running(ids) == 2, timeout=30, message="both pool children to be busy")
    children = child_pids(worker.process.pid)
    assert len(children) == 2

    os.kill(children[0], signal.SIGKILL)  # mid-run: both children hold an anchor
    fault_at = time.monotonic()
    ids += submit(owner_api, short_tasks(LOAD, label="child-kill"))
    wait_for(lambda: unfinished(ids) < LOAD // 2, timeout=60, message="the worker to get through half the load")
    replacement = [pid for pid in child_pids(worker.process.pid) if pid not in children]
    assert replacement, "Celery replaced the killed child"
    os.kill(replacement[0], signal.SIGKILL)  # and once more in the thick of it

    figures = settle("sigkill_pool_child", ids, fault_at=fault_at, notes="2 children killed")
    assert figures["runs_lost"] >= 1  # the first kill did interrupt a run
    assert figures["succeeded"] == len(ids)
    assert worker.process.poll() is None  # the worker itself carried on


def test_sigkill_of_a_whole_worker_loses_nothing(owner_api, spawn_worker, fast_reaper):
    # One message per pool process, so that the four anchors spread over both workers (with the
    # default prefetch, the worker that starts consuming first may hold them all).
    doomed, _ = spawn_worker.many("doomed", "survivor", prefetch=1)
    ids = submit(owner_api, anchors(4, seconds=3))
    wait_for(lambda: running(ids) == 4, timeout=30, message="both workers to be busy")
    ids += submit(owner_api, short_tasks(LOAD // 2, label="worker-kill"))

    doomed.kill()  # SIGKILL to the main process and its pool children at once
    fault_at = time.monotonic()
    after = submit(owner_api, short_tasks(LOAD - LOAD // 2, label="worker-kill-after"))
    ids += after

    figures = settle("sigkill_worker", ids, fault_at=fault_at, notes="1 of 2 workers killed")
    assert figures["runs_lost"] >= 2  # its two anchors at least
    assert figures["succeeded"] == len(ids)
    ran_on = set(Task.objects.filter(pk__in=after).values_list("worker", flat=True))
    assert all(hostname.startswith("survivor") for hostname in ran_on)


def test_sigterm_of_a_worker_lets_its_runs_finish(owner_api, spawn_worker, fast_reaper):
    # One message per pool process, so that the four runs spread over both workers (with the
    # default prefetch, the first worker may take them all).
    leaving, _ = spawn_worker.many("leaving", "staying", prefetch=1)
    ids = submit(owner_api, anchors(4))
    wait_for(lambda: running(ids) == 4, timeout=30, message="both workers to be busy")
    ids += submit(owner_api, short_tasks(LOAD, label="sigterm"))

    # What Kubernetes and docker do: SIGTERM to the main process only; Celery's warm
    # shutdown finishes the runs in progress and gives unstarted messages back to Redis.
    os.kill(leaving.process.pid, signal.SIGTERM)
    fault_at = time.monotonic()
    exit_code = leaving.process.wait(timeout=60)
    shutdown = time.monotonic() - fault_at

    figures = settle(
        "sigterm_worker",
        ids,
        fault_at=fault_at,
        notes=f"warm shutdown in {shutdown:.1f} s, exit {exit_code}",
        shutdown_seconds=round(shutdown, 1),
    )
    assert exit_code == 0
    assert figures["runs_lost"] == 0  # graceful: nothing it had started was cut off
    assert figures["reruns"] == 0
    assert figures["succeeded"] == len(ids)


def test_a_redis_restart_during_the_load_loses_nothing(owner_api, spawn_worker, own_redis, settings, fast_reaper):
    with broker_at(own_redis.url, settings):
        spawn_worker(name="redis-restart", redis_url=own_redis.url)
        ids = submit(owner_api, anchors(2))
        wait_for(lambda: running(ids) == 2, timeout=30, message="the worker to be busy")
        ids += submit(owner_api, short_tasks(LOAD // 2, label="before-restart"))

        own_redis.stop()  # every message and the runs' unacked entries are gone with it
        fault_at = time.monotonic()
        ids += submit(owner_api, short_tasks(20, label="while-down"))  # accepted: the reaper publishes later
        time.sleep(max(0, 1 - (time.monotonic() - fault_at)))
        own_redis.start()
        ids += submit(owner_api, short_tasks(LOAD // 2 - 20, label="after-restart"))

        figures = settle("redis_restart", ids, fault_at=fault_at, notes="down ~1 s; 20 tasks submitted meanwhile")
    assert figures["succeeded"] == len(ids)


def test_flushall_during_the_load_loses_nothing(owner_api, spawn_worker, own_redis, settings, fast_reaper):
    with broker_at(own_redis.url, settings):
        spawn_worker(name="flushall", redis_url=own_redis.url)
        ids = submit(owner_api, anchors(2))
        wait_for(lambda: running(ids) == 2, timeout=30, message="the worker to be busy")
        ids += submit(owner_api, short_tasks(LOAD // 2, label="before-flush"))

        own_redis.client().flushall()
        fault_at = time.monotonic()
        ids += submit(owner_api, short_tasks(LOAD - LOAD // 2, label="after-flush"))

        figures = settle("redis_flushall", ids, fault_at=fault_at)
    assert figures["succeeded"] == len(ids)


def test_killed_postgresql_connections_heal_in_web_and_workers(owner, spawn_worker, spawn_web, fast_reaper):
    spawn_worker(name="pg-kill")
    web = spawn_web(workers=1, threads=2)
    _, key = api_key_create(user=owner, name="reliability")
    headers = {"Authorization": f"Api-Key {key}"}
    statuses = []

    def submit_http(items):
        response = http("POST", web.url("/api/tasks/bulk/"), headers=headers, json_body={"tasks": items})
        statuses.append(response.status)
        return [task["id"] for task in response.json()["tasks"]] if response.status == 201 else []

    batches = [short_tasks(50, label=f"pg batch {n}") for n in range(LOAD // 50)]
    ids = submit_http(anchors(2))
    wait_for(lambda: running(ids) == 2, timeout=30, message="the worker to be busy")
    ids += submit_http(batches[0])
    assert backends(connection, role="worker") and backends(connection, role="web")

    killed = terminate_backends(connection, role="worker") + terminate_backends(connection, role="web")
    fault_at = time.monotonic()
    for batch in batches[1:3]:
        ids += submit_http(batch)
    killed += terminate_backends(connection, role="worker") + terminate_backends(connection, role="web")
    for batch in batches[3:]:
        ids += submit_http(batch)

    figures = settle(
        "postgres_terminate",
        ids,
        fault_at=fault_at,
        notes=f"{killed} backends terminated in 2 rounds; {sum(s >= 500 for s in statuses)} HTTP 5xx",
        http_5xx=sum(s >= 500 for s in statuses),
    )
    assert statuses == [201] * len(statuses)  # web reconnected by itself: no request failed
    assert figures["succeeded"] == len(ids)
    assert backends(connection, role="worker")  # and the worker is connected again


def test_tasks_submitted_while_redis_is_down_are_accepted_and_run_later(
    owner_api, spawn_worker, own_redis, settings, fast_reaper
):
    """Decision: a submit commits the task and answers 201 even when the broker is down;
    the reaper publishes its wake-up once Redis is back. Never a 201 for a task then lost."""
    own_redis.stop()
    with broker_at(own_redis.url, settings):
        settings.REDIS_URL = own_redis.url  # rate limits too: they fail open, the API stays up
        latencies = []
        ids = []
        for batch in range(4):
            started = time.monotonic()
            ids += submit(owner_api, short_tasks(50, label=f"redis-down {batch}", long_every=0))
            latencies.append(time.monotonic() - started)
        for index in range(5):
            started = time.monotonic()
            response = owner_api.post("/api/tasks/", {"kind": "demo.noop", "payload": {"echo": index}}, format="json")
            latencies.append(time.monotonic() - started)
            assert response.status_code == 201
            ids.append(response.json()["id"])
        assert Task.objects.filter(pk__in=ids, status=TaskStatus.QUEUED).count() == len(ids)

        own_redis.start()
        fault_at = time.monotonic()  # recovery counts from Redis being back
        spawn_worker(name="after-outage", redis_url=own_redis.url)
        figures = settle(
            "redis_down_at_submit",
            ids,
            fault_at=fault_at,
            notes=f"all 201; slowest submit {max(latencies):.1f} s; run once Redis was back",
            slowest_submit_seconds=round(max(latencies), 2),
        )
    assert figures["succeeded"] == len(ids)
    assert figures["reruns"] == 0


def test_a_poison_kind_fails_after_its_attempts_and_the_rest_of_the_load_runs(staff_api, spawn_worker, fast_reaper):
    spawn_worker(name="poisoned")
    items = short_tasks(LOAD, label="poison-load")
    poison = {"kind": "demo.crash", "title": "poison", "payload": {}, "max_retries": 1}
    for position in range(0, LOAD, LOAD // 5):
        items.insert(position, poison)
    ids = submit(staff_api, items[:50])
    fault_at = time.monotonic()  # the first poison task is in the first batch
    ids += submit(staff_api, items[50:])

    figures = settle("poison_kind", ids, fault_at=fault_at, notes="5 poison tasks, each killing its process twice")
    poisoned = Task.objects.filter(pk__in=ids, kind="demo.crash")
    assert poisoned.count() == 5
    for task in poisoned:
        assert (task.status, task.attempts) == (TaskStatus.FAILED, 2)
        assert task.error.startswith("WorkerLost: the worker running attempt 2")
    assert figures["succeeded"] == len(ids) - 5
    assert figures["failed"] == 5
