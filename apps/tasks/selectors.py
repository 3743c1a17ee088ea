"""Reads for the admin dashboard. Every query is bounded in time and answered from an index
(`task_status_created`, `task_finished`), so they stay fast at millions of tasks."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Func, Q
from django.db.models.functions import Trunc

from . import dispatch
from .models import Task, TaskStatus
from .registry import all_kinds

LIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRYING)
DONE_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


class PercentileCont(Aggregate):
    """PostgreSQL's PERCENTILE_CONT(fraction) WITHIN GROUP (ORDER BY expression)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


class EpochSeconds(Func):
    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def created_by_status(*, now: datetime, windows: dict[str, timedelta]) -> dict[str, dict[str, int]]:
    """Tasks created within each window (e.g. {"day": 1 day}), by their current status.

    One range scan per status on (status, created_at), glued with UNION ALL: a single
    GROUP BY over the widest window would read the whole index instead.
    """
    widest = max(windows.values())
    parts = [
        Task.objects.filter(status=status, created_at__gte=now - widest)
        .values("status")
        .annotate(**{name: Count("created_at", filter=Q(created_at__gte=now - size)) for name, size in windows.items()})
        .order_by()
        for status in TaskStatus.values
    ]
    counts = {status: dict.fromkeys(windows, 0) for status in TaskStatus.values}
    for row in parts[0].union(*parts[1:], all=True):
        counts[row["status"]] = {name: row[name] for name in windows}
    return counts


def live_by_status() -> dict[str, int]:
    """Every task waiting or running now, whatever its age."""
    live = dict.fromkeys(LIVE_STATUSES, 0)
    for row in Task.objects.filter(status__in=LIVE_STATUSES).values("status").annotate(n=Count("status")).order_by():
        live[row["status"]] = row["n"]
    return live


@dataclass
class Bucket:
    start: datetime
    succeeded: int = 0
    failed: int = 0


def throughput(*, now: datetime, window: timedelta, step: str) -> list[Bucket]:
    """Finished tasks per `step` ("minute" or "hour") over the window, oldest first, gaps as 0."""
    size = timedelta(minutes=1) if step == "minute" else timedelta(hours=1)
    end = _bucket_start(now, step)
    first = end - window + size
    buckets = {}
    at = first
    while at <= end:
        buckets[at] = Bucket(start=at)
        at += size
    rows = (
        Task.objects.filter(finished_at__gte=first, status__in=DONE_STATUSES)
        .annotate(bucket=Trunc("finished_at", step))
        .values("bucket", "status")
        .annotate(n=Count("finished_at"))
        .order_by()
    )
    for row in rows:
        bucket = buckets.get(row["bucket"])
        if bucket is not None:
            setattr(bucket, row["status"], row["n"])
    return list(buckets.values())


def _bucket_start(moment: datetime, step: str) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0) if step == "hour" else moment


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
    """Per kind over the window: finished and failed runs, and p50/p95 run time in seconds."""
    recent = Task.objects.filter(finished_at__gte=now - window, status__in=DONE_STATUSES, started_at__isnull=False)
    if connection.vendor == "postgresql":
        seconds = EpochSeconds(F("finished_at") - F("started_at"))
        rows = (
            recent.values("kind")
            .annotate(
                finished=Count("finished_at"),
                failed=Count("finished_at", filter=Q(status=TaskStatus.FAILED)),
                p50=PercentileCont(seconds, fraction=0.5),
                p95=PercentileCont(seconds, fraction=0.95),
            )
            .order_by()
        )
        return [KindStats(**row) for row in rows]
    # Elsewhere (SQLite in the embedded mode) the window's rows are few: compute in Python.
    runs: dict[str, list] = {}
    for kind, status, started_at, finished_at in recent.values_list("kind", "status", "started_at", "finished_at"):
        runs.setdefault(kind, []).append((status, (finished_at - started_at).total_seconds()))
    return [
        KindStats(
            kind=kind,
            finished=len(items),
            failed=sum(1 for status, _ in items if status == TaskStatus.FAILED),
            p50=_percentile([seconds for _, seconds in items], 0.5),
            p95=_percentile([seconds for _, seconds in items], 0.95),
        )
        for kind, items in runs.items()
    ]


def _percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as PERCENTILE_CONT does."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def queue_names() -> list[str]:
    from django.conf import settings

    return sorted({kind.queue for kind in all_kinds()} | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_depths() -> dict[str, int | None]:
    """Messages waiting per queue, read from the broker (None where it cannot tell)."""
    return {queue: dispatch.queue_depth(queue) for queue in queue_names()}
