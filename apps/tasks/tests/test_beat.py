"""Schedules driven by real `celery beat` processes and run by a real worker."""

import itertools
import time

import pytest

from apps.accounts.models import Quota
from apps.tasks.models import Schedule, Task
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_two_beats_fire_each_run_once_and_pausing_stops_the_runs(owner, owner_api, start_worker, start_beat):
    Quota.objects.create(user=owner, schedule_min_interval_seconds=1)  # staff allowed this owner a fast schedule
    response = owner_api.post(
        "/api/schedules/",
        {"name": "every two seconds", "kind": "demo.noop", "interval_seconds": 2, "payload": {"echo": "tick"}},
        format="json",
    )
    assert response.status_code == 201
    schedule = Schedule.objects.get(pk=response.json()["id"])
    start_worker(concurrency=2, name="beat-worker")
    first, second = start_beat("beat-a"), start_beat("beat-b")

    runs = lambda: Task.objects.filter(schedule=schedule).order_by("created_at")  # noqa: E731
    wait_for(lambda: runs().count() >= 5, timeout=40, interval=0.5, message="five scheduled runs")

    logs = first.read_log() + second.read_log()
    assert logs.count("beat lock acquired") == 1
    assert logs.count("another beat holds the beat lock: standing by") == 1
    created = [task.created_at for task in runs()]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    assert min(gaps) > 1.0, f"a run fired twice: gaps {gaps}"  # one run per 2-second slot
    assert all(task.trigger == "schedule" for task in runs())
    wait_for(
        lambda: all(task.status == "succeeded" for task in runs()[:5]),
        timeout=20,
        message="the worker to run the scheduled tasks",
    )

    assert owner_api.post(f"/api/schedules/{schedule.pk}/", {}, format="json").status_code == 405
    assert owner_api.patch(f"/api/schedules/{schedule.pk}/", {"enabled": False}, format="json").status_code == 200
    time.sleep(1)  # a wake-up already on its way may still land
    paused_count = runs().count()
    time.sleep(5)
    assert runs().count() == paused_count

    # If the active beat dies, the standby takes over.
    active, standby = (first, second) if "beat lock acquired" in first.read_log() else (second, first)
    active.kill()
    wait_for(lambda: "beat lock acquired" in standby.read_log(), timeout=20, message="the standby beat to take over")
