"""Fair sharing with real workers: two worker processes, two owners, limits across both.

Workers run with 3-second leases (conftest.worker_env); the test plays beat by calling the
reaper where a lost run must be noticed.
"""

import threading
import time

import pytest
from django.db import connection

from apps.tasks import fairness
from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus
from tests.support.processes import wait_for

from .test_recovery import reap_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TASKS = "/api/tasks/"


def flood(api, count: int, seconds: float) -> list[str]:
    ids = []
    for start in range(0, count, 500):
        items = [{"kind": "demo.sleep", "payload": {"seconds": seconds, "steps": 1}} for _ in range(start, start + 500)]
        response = api.post(f"{TASKS}bulk/", {"tasks": items[: count - start]}, format="json")
        assert response.status_code == 201, response.content
        ids += [task["id"] for task in response.json()["tasks"]]
    return ids


def unfinished(ids) -> int:
    return Task.objects.filter(pk__in=ids).exclude(status__in=["succeeded", "failed", "cancelled"]).count()


def test_a_second_owner_is_served_during_the_first_owners_flood(owner_api, other_api, owner, start_worker):
    start_worker(concurrency=2, name="fair-a")
    start_worker(concurrency=2, name="fair-b")
    flooded = flood(owner_api, 600, seconds=0.05)
    few = [other_api.post(TASKS, {"kind": "demo.noop"}, format="json").json()["id"] for _ in range(3)]
    wait_for(lambda: unfinished(few) == 0, timeout=30, message="the second owner's three tasks")
    # Served in turn, not after the flood: most of the flood still waits (600 tasks of 50 ms
    # on four slots take 7-8 s at the least; first come, first served, the three came last).
    assert unfinished(flooded) > 300
    assert set(Task.objects.filter(pk__in=few).values_list("status", flat=True)) == {"succeeded"}
    wait_for(lambda: unfinished(flooded) == 0, timeout=120, message="the whole flood to finish")
    assert set(Task.objects.filter(pk__in=flooded).values_list("status", flat=True)) == {"succeeded"}
    assert set(Task.objects.filter(pk__in=flooded).values_list("attempts", flat=True)) == {1}


def watch_running(kind: str, stop: threading.Event, seen: list) -> None:
    """The most tasks of `kind` seen running at once, polled until `stop`."""
    try:
        while not stop.is_set():
            seen.append(Task.objects.filter(kind=kind, status=TaskStatus.RUNNING).count())
            time.sleep(0.01)
    finally:
        connection.close()


def test_a_kind_limit_holds_across_two_workers_and_a_killed_run_gives_its_slot_back(owner_api, other_api, start_worker):
    ConcurrencyLimit.objects.create(scope=LimitScope.KIND, kind="demo.sleep", limit=1)
    fairness.forget_limits()
    workers = [start_worker(concurrency=2, name="limit-a"), start_worker(concurrency=2, name="limit-b")]
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=watch_running, args=("demo.sleep", stop, seen))
    watcher.start()
    try:
        long_run = {"kind": "demo.sleep", "payload": {"seconds": 60, "steps": 60}, "max_retries": 0}
        first_id = owner_api.post(TASKS, long_run, format="json").json()["id"]
        wait_for(lambda: Task.objects.get(pk=first_id).status == "running", timeout=20, message="the first sleep")
        held = flood(other_api, 4, seconds=0.2)
        noops = [owner_api.post(TASKS, {"kind": "demo.noop"}, format="json").json()["id"] for _ in range(4)]
        # Other kinds run on the three free slots; the kind's other tasks wait for its one.
        wait_for(lambda: unfinished(noops) == 0, timeout=20, message="the no-ops beside the held sleeps")
        assert unfinished(held) == 4
        # The worker running the kind's one slot is killed (SIGKILL, its pool child with it):
        # the lease expires, the reaper fails the run (no retries left), the slot is free.
        holder = Task.objects.get(pk=first_id).worker
        next(worker for worker in workers if holder.startswith(worker.name)).kill()
        reap_until(lambda: unfinished(held) == 0, timeout=60, message="the held sleeps, after the slot came back")
    finally:
        stop.set()
        watcher.join()
    assert max(seen) == 1
    assert Task.objects.get(pk=first_id).error.startswith("WorkerLost")
    assert set(Task.objects.filter(pk__in=held).values_list("status", flat=True)) == {"succeeded"}
