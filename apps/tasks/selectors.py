"""Reads for the admin dashboard. Live figures come from the task table through the indexes
of the few live rows (`task_status_created`); everything about finished tasks comes from the
rollups (rollups.py), never from scanning the table, so they stay fast at tens of millions."""

import operator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce

from django.db import connection
from django.db.models import Count, Q, Sum

from . import dispatch, rollups
from .models import FINAL_STATUSES, Task, TaskRollup, TaskStatus
from .registry import all_kinds

LIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRYING)
DONE_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def live_counts(*, now: datetime, windows: dict[str, timedelta]) -> dict[str, dict[str, int]]:
    """Tasks waiting or running now, by state: all of them ("now", whatever their age) and
    those created within each window (e.g. {"day": 1 day}).

    One index-only scan of the live states' few entries in task_status_created (a backlog of
    a million queued tasks makes it read a million). Finished tasks come from the rollups.
    """
    rows = (
        Task.objects.filter(status__in=LIVE_STATUSES)
        .values("status")
        .annotate(
            now=Count("created_at"),
            **{name: Count("created_at", filter=Q(created_at__gte=now - size)) for name, size in windows.items()},
        )
        .order_by()
    )
    counts = {status: dict.fromkeys(["now", *windows], 0) for status in LIVE_STATUSES}
    for row in rows:
        counts[row["status"]] = {name: row[name] for name in ["now", *windows]}
    return counts


def _rollup_range(start: datetime, end: datetime | None, *, now: datetime) -> Q:
    """The rollup rows covering [start, end) (end None: up to now), to the minute where minute
    rows are still kept and to the hour before: hour rows for the whole hours inside, minute
    rows for the edges."""
    minute, hour = rollups.MINUTE, rollups.HOUR
    first = rollups.floor_to(start, minute)
    if first < rollups.minutes_kept_from(now):
        first = rollups.floor_to(start, hour)
    whole_from = first if first == rollups.floor_to(first, hour) else rollups.floor_to(first, hour) + timedelta(hours=1)
    whole_to = rollups.floor_to(end or now, hour)
    if whole_to < whole_from:  # inside one hour: minutes only
        whole_to = whole_from
    in_end = Q() if end is None else Q(bucket__lt=rollups.floor_to(end, minute))
    return (
        Q(span=minute, bucket__gte=first, bucket__lt=whole_from)
        | Q(span=hour, bucket__gte=whole_from, bucket__lt=whole_to)
        | (Q(span=minute, bucket__gte=whole_to) & in_end)
    )


def finished_by_status(*, now: datetime, windows: dict[str, timedelta]) -> dict[str, dict[str, int]]:
    """Tasks that reached each final state within each window, from the rollups (one query)."""
    ranges = {name: _rollup_range(now - size, None, now=now) for name, size in windows.items()}
    # The union: a wider window reads hour rows where a narrower one reads minute rows.
    rows = (
        TaskRollup.objects.filter(reduce(operator.or_, ranges.values()), status__in=FINAL_STATUSES)
        .values("status")
        .annotate(**{name: Sum("finished", filter=where) for name, where in ranges.items()})
        .order_by()
    )
    counts = {status: dict.fromkeys(windows, 0) for status in FINAL_STATUSES}
    for row in rows:
        counts[row["status"]] = {name: row[name] or 0 for name in windows}
    return counts


@dataclass
class Bucket:
    start: datetime
    succeeded: int = 0
    failed: int = 0


def throughput(*, now: datetime, window: timedelta, step: str) -> list[Bucket]:
    """Finished tasks per `step` ("minute" or "hour") over the window, oldest first, gaps as 0
    (buckets in UTC, from the rollups of the same span)."""
    span = rollups.MINUTE if step == "minute" else rollups.HOUR
    size = timedelta(seconds=span)
    end = rollups.floor_to(now, span)
    first = end - window + size
    buckets = {}
    at = first
    while at <= end:
        buckets[at] = Bucket(start=at)
        at += size
    rows = (
        TaskRollup.objects.filter(span=span, bucket__gte=first, status__in=DONE_STATUSES)
        .values("bucket", "status")
        .annotate(n=Sum("finished"))
        .order_by()
    )
    for row in rows:
        bucket = buckets.get(rollups.floor_to(row["bucket"], span))
        if bucket is not None:
            setattr(bucket, row["status"], row["n"])
    return list(buckets.values())


@dataclass
class KindStats:
    kind: str
    finished: int
    failed: int
    p50: float | None
    p95: float | None

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


def kind_stats(*, now: datetime, window: timedelta = timedelta(days=1)) -> list[KindStats]:
    """Per kind over the window: finished and failed runs, and p50/p95 run time in seconds
    (read from the rollups' run-time histograms: within ±4.4 % of the nearest-rank value)."""
    rows = TaskRollup.objects.filter(_rollup_range(now - window, None, now=now), status__in=DONE_STATUSES, runs__gt=0)
    histograms: dict[str, dict[str, int]] = {}
    failed: dict[str, int] = {}
    for kind, status, slot, runs in _histogram_slots(rows):
        histogram = histograms.setdefault(kind, {})
        histogram[slot] = histogram.get(slot, 0) + runs
        if status == TaskStatus.FAILED:
            failed[kind] = failed.get(kind, 0) + runs
    return [
        KindStats(
            kind=kind,
            finished=sum(histogram.values()),
            failed=failed.get(kind, 0),
            p50=rollups.percentile(histogram, 0.5),
            p95=rollups.percentile(histogram, 0.95),
        )
        for kind, histogram in histograms.items()
    ]


def _histogram_slots(rows) -> list[tuple[str, str, str, int]]:
    """(kind, status, slot, runs) summed over the rollup rows: in SQL on PostgreSQL (a few
    hundred slots instead of a day's minute and hour rows and their JSON), else in Python."""
    if connection.vendor == "postgresql":
        sql, params = rows.values("pk").query.sql_with_params()
        table = TaskRollup._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT r.kind, r.status, slot.key, sum(slot.value::bigint) FROM {table} r "
                f"CROSS JOIN LATERAL jsonb_each_text(r.run_histogram) AS slot WHERE r.id IN ({sql}) GROUP BY 1, 2, 3",
                params,
            )
            return [(kind, status, slot, int(runs)) for kind, status, slot, runs in cursor.fetchall()]
    return [
        (kind, status, slot, runs)
        for kind, status, histogram in rows.values_list("kind", "status", "run_histogram")
        for slot, runs in histogram.items()
    ]


def queue_names() -> list[str]:
    from django.conf import settings

    return sorted({kind.queue for kind in all_kinds()} | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_depths() -> dict[str, int | None]:
    """Messages waiting per queue, read from the broker (None where it cannot tell)."""
    return {queue: dispatch.queue_depth(queue) for queue in queue_names()}
