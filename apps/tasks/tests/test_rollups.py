"""The dashboard's rollups of finished tasks against the task table's truth, on PostgreSQL."""

import threading
from datetime import UTC, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.tasks import rollups, selectors, services
from apps.tasks.models import Task, TaskRollup, TaskRollupState, TaskStatus
from apps.tasks.submission import TaskSpec

pytestmark = pytest.mark.django_db(transaction=True)


def truth(*, since=None) -> dict[tuple, int]:
    """{(minute, kind, status): finished} straight from the table, in Python."""
    out: dict[tuple, int] = {}
    rows = Task.objects.filter(status__in=["succeeded", "failed", "cancelled"], finished_at__isnull=False)
    for finished_at, kind, status in rows.values_list("finished_at", "kind", "status"):
        key = (finished_at.astimezone(UTC).replace(second=0, microsecond=0), kind, status)
        out[key] = out.get(key, 0) + 1
    return out


def stored(span=rollups.MINUTE) -> dict[tuple, int]:
    return {
        (row.bucket.astimezone(UTC), row.kind, row.status): row.finished for row in TaskRollup.objects.filter(span=span)
    }


def hourly(counts: dict[tuple, int]) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for (minute, kind, status), n in counts.items():
        key = (minute.replace(minute=0), kind, status)
        out[key] = out.get(key, 0) + n
    return out


def finished(owner, *, kind="demo.noop", status=TaskStatus.SUCCEEDED, seconds=1.0, ago=timedelta(minutes=1)):
    end = timezone.now() - ago
    return Task.objects.create(
        owner=owner, kind=kind, status=status, started_at=end - timedelta(seconds=seconds), finished_at=end
    )


def run_through_services(owner, count: int) -> list[Task]:
    """Submit, claim and finish tasks the way a worker does: every other one fails for good."""
    tasks = []
    for n in range(count):
        task, _ = services.task_submit(owner=owner, spec=TaskSpec(kind="demo.noop", payload={"echo": n}))
        claimed = services.task_claim(task_id=task.pk, worker="celery@test")
        assert claimed is not None
        if n % 2:
            services.task_fail(task=claimed, error="Boom", permanent=True)
        else:
            services.task_succeed(task=claimed, result={"n": n})
        tasks.append(task)
    return tasks


def test_counts_after_real_finishes_equal_the_table_and_rerunning_changes_nothing(owner):
    run_through_services(owner, 6)
    finished(owner, kind="demo.sleep", status=TaskStatus.CANCELLED, ago=timedelta(minutes=30))
    finished(owner, kind="demo.sleep", ago=timedelta(hours=5))
    rollups.refresh()
    expected = truth()
    assert sum(expected.values()) == 8
    assert stored() == expected
    assert stored(rollups.HOUR) == hourly(expected)
    before = list(TaskRollup.objects.order_by("pk").values())
    assert rollups.refresh()["rows_written"] == 0  # idempotent: nothing to rewrite
    assert list(TaskRollup.objects.order_by("pk").values()) == before


def test_the_first_run_backfills_history_older_than_the_minute_rows_as_hours(owner, settings):
    settings.TASK_ROLLUP_MINUTE_DAYS = 2
    finished(owner, ago=timedelta(days=9))
    finished(owner, status=TaskStatus.FAILED, ago=timedelta(days=4, minutes=3))
    finished(owner, ago=timedelta(hours=1))
    result = rollups.refresh()
    assert result["steps"] > 2  # a day per transaction for the old part
    expected = truth()
    assert stored(rollups.HOUR) == hourly(expected)
    recent = {key: n for key, n in expected.items() if key[0] >= rollups.minutes_kept_from(timezone.now())}
    assert stored() == recent and len(recent) == 1


def test_a_finish_committed_late_is_counted_by_the_next_run_within_the_lag(owner):
    finished(owner, ago=timedelta(seconds=70))
    rollups.refresh()
    # Stamped a minute ago, committed only now: its minute was already aggregated.
    late = finished(owner, kind="demo.sleep", ago=timedelta(seconds=61))
    assert TaskRollupState.objects.get().complete_before <= rollups.floor_to(late.finished_at, rollups.MINUTE)
    rollups.refresh()
    assert stored() == truth() and len(truth()) == 2


def test_a_finish_committed_while_the_job_runs_is_counted_by_the_next_run(owner):
    """A worker's transaction stamps finished_at, the job aggregates, then the worker commits."""
    stamped, release = threading.Event(), threading.Event()

    def slow_finish():
        try:
            with transaction.atomic():
                finished(owner, kind="notify.email", ago=timedelta(seconds=1))
                stamped.set()
                release.wait(10)
        finally:
            connections.close_all()

    worker = threading.Thread(target=slow_finish)
    worker.start()
    assert stamped.wait(10)
    rollups.refresh()  # does not see the uncommitted row
    assert ("notify.email", "succeeded") not in {(k, s) for _, k, s in stored()}
    release.set()
    worker.join(10)
    rollups.refresh()
    assert stored() == truth() and len(truth()) == 1


def test_a_commit_later_than_the_lag_is_missed_until_rebuilt(owner, settings):
    settings.TASK_ROLLUP_LAG_SECONDS = 60
    rollups.refresh()
    finished(owner, ago=timedelta(minutes=10))  # committed ten minutes after its stamp
    rollups.refresh()
    assert stored() == {}
    call_command("rebuild_task_rollups", "--since", (timezone.now() - timedelta(hours=1)).isoformat())
    assert stored() == truth() != {}


def test_rollups_keep_the_history_of_tasks_deleted_by_retention(owner):
    finished(owner, ago=timedelta(days=3))
    finished(owner, status=TaskStatus.FAILED, ago=timedelta(days=3))
    finished(owner, ago=timedelta(minutes=1))
    rollups.refresh()
    before = stored(rollups.HOUR)
    assert services.delete_old_tasks(older_than=timedelta(days=2)) == 2
    rollups.refresh()
    assert stored(rollups.HOUR) == before
    week = selectors.finished_by_status(now=timezone.now(), windows={"week": timedelta(days=7)})
    assert week["succeeded"]["week"] == 2 and week["failed"]["week"] == 1


def test_a_task_retried_by_hand_after_its_minute_froze_counts_once_per_finish(owner, superuser, settings):
    settings.TASK_ROLLUP_LAG_SECONDS = 60
    task = finished(owner, status=TaskStatus.FAILED, ago=timedelta(minutes=10))
    rollups.refresh()
    services.task_retry(task=task, actor=superuser)
    claimed = services.task_claim(task_id=task.pk, worker="celery@test")
    services.task_succeed(task=claimed, result=None)
    rollups.refresh()
    counts = selectors.finished_by_status(now=timezone.now(), windows={"hour": timedelta(hours=1)})
    assert (counts["failed"]["hour"], counts["succeeded"]["hour"]) == (1, 1)  # two finishes
    assert selectors.live_counts(now=timezone.now(), windows={})["queued"]["now"] == 0


def test_within_the_lag_the_rollups_follow_the_table(owner, superuser):
    task = finished(owner, status=TaskStatus.FAILED, ago=timedelta(minutes=1))
    rollups.refresh()
    services.task_retry(task=task, actor=superuser)
    rollups.refresh()
    counts = selectors.finished_by_status(now=timezone.now(), windows={"hour": timedelta(hours=1)})
    assert counts["failed"]["hour"] == 0 and stored() == truth() == {}


def test_windows_cut_across_hour_boundaries_count_minute_and_hour_rows_alike(owner):
    # "now" ten minutes past an hour that is over an hour old: the last hour spans two hours.
    now = rollups.floor_to(timezone.now(), rollups.HOUR) - timedelta(hours=1) + timedelta(minutes=10)
    for ago in (timedelta(minutes=5), timedelta(minutes=20), timedelta(minutes=50), timedelta(hours=3)):
        end = now - ago
        Task.objects.create(owner=owner, kind="demo.noop", status="succeeded", started_at=end, finished_at=end)
    rollups.refresh()
    windows = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
    counts = selectors.finished_by_status(now=now, windows=windows)
    assert counts["succeeded"] == {"hour": 3, "day": 4, "week": 4}
    one = selectors.finished_by_status(now=now, windows={"hour": timedelta(hours=1)})
    assert one["succeeded"] == {"hour": 3}


def test_a_run_with_nothing_new_reads_only_the_fingerprints(owner):
    finished(owner, ago=timedelta(seconds=30))
    rollups.refresh()
    with CaptureQueriesContext(connection) as captured:
        assert rollups.refresh()["rows_written"] == 0
    assert not any("GROUP BY 1, 2, 3, 7" in query["sql"] for query in captured.captured_queries)
    finished(owner, kind="demo.sleep", ago=timedelta(seconds=20))
    with CaptureQueriesContext(connection) as captured:
        assert rollups.refresh()["rows_written"] > 0
    assert any("GROUP BY 1, 2, 3, 7" in query["sql"] for query in captured.captured_queries)
    assert stored() == truth()


def test_kind_stats_read_percentiles_from_the_histograms_within_their_precision(owner):
    for seconds in range(1, 101):
        finished(owner, kind="demo.sleep", seconds=float(seconds), ago=timedelta(minutes=seconds % 50 + 1))
    finished(owner, kind="demo.fail", status=TaskStatus.FAILED, seconds=0.5)
    rollups.refresh()
    stats = {row.kind: row for row in selectors.kind_stats(now=timezone.now(), window=timedelta(days=1))}
    sleep = stats["demo.sleep"]
    assert (sleep.finished, sleep.failed) == (100, 0)
    assert sleep.p50 == pytest.approx(50.5, rel=0.045)
    assert sleep.p95 == pytest.approx(95.05, rel=0.045)
    assert (stats["demo.fail"].finished, stats["demo.fail"].failed) == (1, 1)


def test_histogram_slots_are_the_same_in_postgresql_and_python(owner):
    durations = [0.0, 0.0005, 0.001, 0.02, 0.7, 9.0, 22.0, 3599.0]
    for seconds in durations:
        finished(owner, seconds=seconds)
    rollups.refresh()
    merged: dict[str, int] = {}
    for row in TaskRollup.objects.filter(span=rollups.MINUTE):
        for slot, n in row.run_histogram.items():
            merged[slot] = merged.get(slot, 0) + n
    python: dict[str, int] = {}
    for seconds in durations:
        python[str(rollups.slot_of(seconds))] = python.get(str(rollups.slot_of(seconds)), 0) + 1
    assert connection.vendor == "postgresql" and merged == python


def test_percentile_and_slots():
    assert rollups.percentile({}, 0.5) is None
    for seconds in (0.001, 0.0234, 1.0, 9.5, 86400.0):
        middle = rollups.slot_seconds(rollups.slot_of(seconds))
        assert middle == pytest.approx(seconds, rel=0.045)
    histogram = {str(rollups.slot_of(1.0)): 9, str(rollups.slot_of(100.0)): 1}
    assert rollups.percentile(histogram, 0.5) == pytest.approx(1.0, rel=0.045)
    assert rollups.percentile(histogram, 0.95) == pytest.approx(1.0, rel=0.045)  # rank 8.55 < 9
    assert rollups.percentile(histogram, 1.0) == pytest.approx(100.0, rel=0.045)


def test_a_run_that_finds_another_at_work_leaves_it_to_finish(owner):
    finished(owner)
    rollups.refresh()
    finished(owner, kind="demo.sleep", ago=timedelta(seconds=10))
    locked, release = threading.Event(), threading.Event()

    def other_run():
        try:
            with transaction.atomic():
                TaskRollupState.objects.select_for_update().get(name=rollups.STATE_NAME)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=other_run)
    holder.start()
    assert locked.wait(10)
    try:
        assert rollups.refresh() == {"steps": 0, "rows_written": 0, "busy": True}
    finally:
        release.set()
        holder.join(10)
    assert rollups.refresh()["rows_written"] > 0
    assert stored() == truth()


def test_two_jobs_at_once_leave_one_consistent_result(owner):
    for n in range(20):
        finished(owner, kind="demo.noop" if n % 2 else "demo.sleep", ago=timedelta(minutes=n % 7))
    errors = []

    def run():
        try:
            rollups.refresh()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert stored() == truth() and TaskRollupState.objects.count() == 1
