"""Task metrics: counters and histograms of task outcomes, and gauges read when Prometheus scrapes.

Counters and histograms are recorded where tasks change state (apps/tasks/services.py), in
web processes (submissions) and Celery pool children (runs); apps/core/metrics.py sums them
across a service's processes (multiprocess mode) and serves them.

The gauges (queue depth, tasks by status) describe the whole system, not a process: they
are computed per scrape of the web's /metrics, with cheap queries. TasksConfig.ready()
registers them with apps.core.metrics.
"""

import logging
import os
from collections import Counter as Tally

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from . import dispatch
from .models import FINAL_STATUSES, Task, TaskStatus
from .registry import all_kinds

logger = logging.getLogger(__name__)

TASKS_SUBMITTED = Counter("taskflow_tasks_submitted", "Tasks accepted, by kind (API, bulk, schedules).", ["kind"])
TASKS_STARTED = Counter("taskflow_tasks_started", "Attempts claimed by a worker, by kind.", ["kind"])
TASKS_SUCCEEDED = Counter("taskflow_tasks_succeeded", "Attempts that succeeded, by kind.", ["kind"])
TASKS_FAILED = Counter(
    "taskflow_tasks_failed", "Tasks that failed for good (no attempts left, or a permanent error).", ["kind"]
)
TASKS_RETRIED = Counter(
    "taskflow_tasks_retried", "Failed attempts (including lost workers) that will be retried.", ["kind"]
)
TASK_RUN_SECONDS = Histogram(
    "taskflow_task_run_seconds",
    "Seconds from a worker's claim to the attempt's outcome, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
)
TASK_QUEUE_WAIT_SECONDS = Histogram(
    "taskflow_task_queue_wait_seconds",
    "Seconds from when an attempt was due (queued, or its run_at) to its claim by a worker, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
)

# Below this many rows (the planner's estimate) tasks are counted exactly by status; above, the
# final statuses, which hold nearly every row, come from the planner's statistics instead.
EXACT_COUNT_BELOW = 50_000


# --- Recording (called from apps/tasks/services.py) ------------------------------------------

_TASK_METRICS = (
    TASKS_SUBMITTED,
    TASKS_STARTED,
    TASKS_SUCCEEDED,
    TASKS_FAILED,
    TASKS_RETRIED,
    TASK_RUN_SECONDS,
    TASK_QUEUE_WAIT_SECONDS,
)
_series_created_in_pid = None


def _create_every_kinds_series() -> None:
    """From a process's first recording on, export every registered kind's series, at 0 until it
    counts: a series that appears only with its first event hides that event from increase()."""
    global _series_created_in_pid
    if _series_created_in_pid == os.getpid():
        return
    for kind in all_kinds():
        for metric in _TASK_METRICS:
            metric.labels(kind.name)
    _series_created_in_pid = os.getpid()


def tasks_submitted(tasks) -> None:
    _create_every_kinds_series()
    for kind, count in Tally(task.kind for task in tasks).items():
        TASKS_SUBMITTED.labels(kind).inc(count)


def task_started(task, *, now) -> None:
    """A worker claimed an attempt at `now`; it was due when queued or at its run_at, whichever is later."""
    _create_every_kinds_series()
    TASKS_STARTED.labels(task.kind).inc()
    due = max((moment for moment in (task.queued_at, task.run_at) if moment), default=task.created_at)
    TASK_QUEUE_WAIT_SECONDS.labels(task.kind).observe(max((now - due).total_seconds(), 0.0))


_OUTCOME_COUNTERS = {"succeeded": TASKS_SUCCEEDED, "failed": TASKS_FAILED, "retrying": TASKS_RETRIED}


def task_ended(task, *, status: str) -> None:
    """An attempt ended in `status` (succeeded, failed, retrying or cancelled)."""
    _create_every_kinds_series()
    if status in _OUTCOME_COUNTERS:
        _OUTCOME_COUNTERS[status].labels(task.kind).inc()
    if task.started_at:
        TASK_RUN_SECONDS.labels(task.kind).observe(max((timezone.now() - task.started_at).total_seconds(), 0.0))


def runs_lost(tasks) -> None:
    """The reaper ended these attempts (their worker stopped renewing the lease); no run time is known."""
    _create_every_kinds_series()
    for task in tasks:
        if task.status in _OUTCOME_COUNTERS:
            _OUTCOME_COUNTERS[task.status].labels(task.kind).inc()


# --- Gauges, computed per scrape --------------------------------------------------------------


def known_queues() -> set[str]:
    return {kind.queue for kind in all_kinds()} | {settings.CELERY_TASK_DEFAULT_QUEUE}


def _final_status_estimates(table: str) -> dict[str, int] | None:
    """Rows per final status from PostgreSQL's statistics, or None when counting is cheap enough."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.reltuples::bigint, s.most_common_vals::text::text[], s.most_common_freqs
            FROM pg_class c
            LEFT JOIN pg_stats s ON s.schemaname = ANY (current_schemas(false))
                AND s.tablename = c.relname AND s.attname = 'status'
            WHERE c.oid = to_regclass(%s)
            """,
            [table],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < EXACT_COUNT_BELOW:
        return None
    rows, values, frequencies = row
    by_value = dict(zip(values or [], frequencies or [], strict=True))
    return {status: round(rows * by_value.get(status, 0.0)) for status in FINAL_STATUSES}


def task_counts_by_status() -> dict[str, int]:
    """Tasks per status: exact for waiting and running ones (few, and indexed by status)."""
    counts = dict.fromkeys(TaskStatus.values, 0)
    rows = Task.objects.order_by()
    estimates = _final_status_estimates(Task._meta.db_table)
    if estimates is not None:
        counts.update(estimates)
        rows = rows.filter(status__in=[status for status in TaskStatus.values if status not in FINAL_STATUSES])
    counts.update(rows.values_list("status").annotate(count=Count("pk")).values_list("status", "count"))
    return counts


class SystemGaugesCollector:
    """taskflow_queue_depth{queue} and taskflow_tasks_by_status{status}, read when scraped."""

    def collect(self):
        depth = GaugeMetricFamily("taskflow_queue_depth", "Messages waiting in each broker queue.", labels=["queue"])
        for queue in sorted(known_queues()):
            value = dispatch.queue_depth(queue)
            if value is None:
                break  # the broker cannot tell: no samples, and one timeout per scrape at most
            depth.add_metric([queue], value)
        yield depth

        by_status = GaugeMetricFamily("taskflow_tasks_by_status", "Tasks in each status.", labels=["status"])
        try:
            counts = task_counts_by_status()
        except Exception as exc:  # the database is down: still serve every other metric
            logger.warning("taskflow_tasks_by_status not collected: %s", exc)
            counts = {}
        for status, count in sorted(counts.items()):
            by_status.add_metric([status], count)
        yield by_status


# One instance, so that registering it again (a second ready()) adds nothing.
SYSTEM_GAUGES = SystemGaugesCollector()
