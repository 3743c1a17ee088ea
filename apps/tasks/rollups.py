"""Rollups of finished tasks for the dashboard: counts and run times per minute and per hour,
by kind and final status (TaskRollup), so the dashboard never scans the task table.

Kept by a periodic job (`refresh`, beat's "taskflow-refresh-task-rollups" every
TASK_ROLLUP_INTERVAL seconds), never by the finishing transaction: a finish stays one UPDATE
with no counter row to lock. Each run re-aggregates, from the `task_finished` index, every
minute from its watermark on, and replaces those buckets (idempotent: running it twice
changes nothing). The watermark trails the clock by TASK_ROLLUP_LAG_SECONDS, so a finish
whose commit lands after the run that first covered its minute (finished_at is stamped
before the commit) is still counted by a later run; one committed more than the lag after
its stamp is missed until `manage.py rebuild_task_rollups` recomputes that range.

Minute rows are kept TASK_ROLLUP_MINUTE_DAYS; hour rows (summed from the minute rows, or
from the table on the first run's backfill) are kept TASK_ROLLUP_HOUR_DAYS, beyond the
tasks' own retention: deleting old tasks does not change the history. A task retried by hand
after it finished counts once per finish (finishes are events; the status table's live
column shows where it is now).

Run times go into a log-scale histogram with 8 slots per doubling from 1 ms; a percentile
read from it is the middle of its slot, within ±4.4 % of the exact value.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import FINAL_STATUSES, Task, TaskRollup, TaskRollupState

MINUTE, HOUR = 60, 3600
STATE_NAME = "finished"
SLOTS_PER_DOUBLING = 8
FLOOR_SECONDS = 0.001
BACKFILL_CHUNK = timedelta(days=1)


def slot_of(seconds: float) -> int:
    return math.floor(math.log2(max(seconds, FLOOR_SECONDS) / FLOOR_SECONDS) * SLOTS_PER_DOUBLING)


def slot_seconds(slot: int) -> float:
    """The geometric middle of a slot."""
    return FLOOR_SECONDS * 2 ** ((int(slot) + 0.5) / SLOTS_PER_DOUBLING)


def percentile(histogram: dict, fraction: float) -> float | None:
    """The fraction's value (PERCENTILE_CONT's rank, fraction * (n - 1)) read from a histogram."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = fraction * (total - 1)
    seen = 0
    for slot in sorted(histogram, key=int):
        seen += histogram[slot]
        if seen > rank:
            return slot_seconds(slot)
    return slot_seconds(max(histogram, key=int))


def floor_to(moment: datetime, span: int) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0, minute=0 if span == HOUR else moment.minute)


@dataclass
class Figures:
    finished: int = 0
    runs: int = 0
    run_seconds: float = 0.0
    run_histogram: dict = field(default_factory=dict)

    def add(self, other: "Figures") -> None:
        self.finished += other.finished
        self.runs += other.runs
        self.run_seconds += other.run_seconds
        for slot, count in other.run_histogram.items():
            self.run_histogram[str(slot)] = self.run_histogram.get(str(slot), 0) + count


# --- Aggregating the table --------------------------------------------------------------------

_FINAL = [str(status) for status in FINAL_STATUSES]

_POSTGRES_AGGREGATE = f"""
SELECT date_trunc(%s, finished_at AT TIME ZONE 'UTC') AS bucket, kind, status,
       count(*) AS finished, count(started_at) AS runs,
       coalesce(sum(greatest(extract(epoch FROM finished_at - started_at)::float8, 0)), 0) AS run_seconds,
       floor(ln(greatest(extract(epoch FROM finished_at - started_at)::float8, {FLOOR_SECONDS}) / {FLOOR_SECONDS})
             * {SLOTS_PER_DOUBLING} / ln(2))::int AS slot
FROM {Task._meta.db_table}
WHERE finished_at >= %s AND finished_at < %s AND status = ANY(%s)
GROUP BY 1, 2, 3, 7
"""


_POSTGRES_FINGERPRINTS = f"""
SELECT date_trunc('minute', finished_at AT TIME ZONE 'UTC'), count(*), sum(extract(epoch FROM finished_at))::text
FROM {Task._meta.db_table}
WHERE finished_at >= %s AND finished_at < %s AND status = ANY(%s)
GROUP BY 1
"""


def fingerprints(start: datetime, end: datetime) -> dict[str, list] | None:
    """{minute: [finishes, exact sum of their finished_at]} for [start, end), from the index
    alone: a minute whose fingerprint did not move since the last run has the same rows (a
    finish that arrives, commits late or is undone by a retry changes it). None off
    PostgreSQL, where every minute is re-aggregated."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(_POSTGRES_FINGERPRINTS, [start, end, _FINAL])
        return {minute.replace(tzinfo=UTC).isoformat(): [count, total] for minute, count, total in cursor.fetchall()}


def aggregate(start: datetime, end: datetime, span: int) -> dict[tuple, Figures]:
    """{(bucket, kind, status): Figures} of tasks finished in [start, end), from the table."""
    out: dict[tuple, Figures] = defaultdict(Figures)
    if connection.vendor == "postgresql":
        unit = "hour" if span == HOUR else "minute"
        with connection.cursor() as cursor:
            cursor.execute(_POSTGRES_AGGREGATE, [unit, start, end, _FINAL])
            for bucket, kind, status, finished, runs, run_seconds, slot in cursor.fetchall():
                figures = out[(bucket.replace(tzinfo=UTC), kind, status)]
                figures.finished += finished
                if runs:
                    figures.runs += runs
                    figures.run_seconds += run_seconds
                    histogram = figures.run_histogram
                    histogram[str(slot)] = histogram.get(str(slot), 0) + runs
        return dict(out)
    # Elsewhere (SQLite in the embedded mode) the volumes are small: in Python.
    rows = (
        Task.objects.filter(finished_at__gte=start, finished_at__lt=end, status__in=FINAL_STATUSES)
        .order_by()
        .values_list("finished_at", "kind", "status", "started_at")
        .iterator(chunk_size=5000)
    )
    for finished_at, kind, status, started_at in rows:
        figures = out[(floor_to(finished_at, span), kind, status)]
        if started_at is None:
            figures.add(Figures(finished=1))
        else:
            seconds = max((finished_at - started_at).total_seconds(), 0.0)
            figures.add(Figures(1, 1, seconds, {str(slot_of(seconds)): 1}))
    return dict(out)


def _replace(span: int, start: datetime, end: datetime | None, figures: dict[tuple, Figures]) -> int:
    """Make the stored buckets of [start, end) equal `figures`, writing only what changed."""
    stored = TaskRollup.objects.filter(span=span, bucket__gte=start)
    if end is not None:
        stored = stored.filter(bucket__lt=end)
    existing = {(row.bucket.astimezone(UTC), row.kind, row.status): row for row in stored}
    fields = ("finished", "runs", "run_seconds", "run_histogram")
    changed, created = [], []
    for key, new in figures.items():
        row = existing.pop(key, None)
        values = {name: getattr(new, name) for name in fields}
        if row is None:
            created.append(TaskRollup(span=span, bucket=key[0], kind=key[1], status=key[2], **values))
        elif any(getattr(row, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(row, name, value)
            changed.append(row)
    if existing:
        TaskRollup.objects.filter(pk__in=[row.pk for row in existing.values()]).delete()
    TaskRollup.objects.bulk_create(created, batch_size=1000)
    TaskRollup.objects.bulk_update(changed, fields, batch_size=500)
    return len(created) + len(changed) + len(existing)


def _hours_from_minutes(start: datetime) -> dict[tuple, Figures]:
    hours: dict[tuple, Figures] = defaultdict(Figures)
    for row in TaskRollup.objects.filter(span=MINUTE, bucket__gte=start):
        hours[(floor_to(row.bucket, HOUR), row.kind, row.status)].add(
            Figures(row.finished, row.runs, row.run_seconds, row.run_histogram)
        )
    return dict(hours)


# --- The job ------------------------------------------------------------------------------------


def refresh(*, now: datetime | None = None, wait: bool = False) -> dict:
    """Bring the rollups up to date. Safe to run concurrently: a run that finds another one
    at work leaves it to finish (so beat's runs never pile up in the workers during a long
    first build), unless `wait`, when it waits for each step's lock."""
    now = now or timezone.now()
    TaskRollupState.objects.get_or_create(name=STATE_NAME)
    steps = written = 0
    while True:
        steps += 1
        done, count = _step(now, wait=wait)
        written += count
        if done is None:
            return {"steps": steps - 1, "rows_written": written, "busy": True}
        if done:
            return {"steps": steps, "rows_written": written}


def minutes_kept_from(now: datetime) -> datetime:
    return floor_to(now - timedelta(days=settings.TASK_ROLLUP_MINUTE_DAYS), HOUR)


def _step(now: datetime, *, wait: bool) -> tuple[bool | None, int]:
    """One transaction of work: (True when up to date, rows written); (None, 0) when another
    run holds the state row and `wait` is off."""
    with transaction.atomic():
        state = TaskRollupState.objects.select_for_update(skip_locked=not wait).filter(name=STATE_NAME).first()
        if state is None:
            return None, 0
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Thousands of rows, not millions: compiling the plans (JIT) costs more than
                # running them (a second instead of a tenth of one).
                cursor.execute("SET LOCAL jit = off")
        frontier = floor_to(now - timedelta(seconds=settings.TASK_ROLLUP_LAG_SECONDS), MINUTE)
        minutes_from = minutes_kept_from(now)
        start = state.complete_before
        if start is None:  # the first run: everything the table holds
            oldest = (
                Task.objects.filter(finished_at__isnull=False)
                .order_by("finished_at")
                .values_list("finished_at", flat=True)
                .first()
            )
            start = oldest or frontier
        start = min(start, frontier)
        if start < minutes_from:
            # Older than the minute rows are kept: straight to hours, a day per transaction.
            begin = floor_to(start, HOUR)
            end = min(begin + BACKFILL_CHUNK, minutes_from)
            written = _replace(HOUR, begin, end, aggregate(begin, end, HOUR))
            state.complete_before = end
            state.save(update_fields=["complete_before"])
            return False, written
        begin = floor_to(start, MINUTE)
        far = now + timedelta(days=1)  # finished_at stamped by a worker whose clock runs ahead
        # Only the minutes whose fingerprint moved are aggregated again (the whole lag window
        # when there are no fingerprints: the first run, after a rebuild, off PostgreSQL).
        prints, known = fingerprints(begin, far), state.fingerprints or {}
        if prints is None or not known:
            low, high = begin, far
        else:
            dirty = [minute for minute, mark in prints.items() if known.get(minute) != mark]
            dirty += [minute for minute in known if minute >= begin.isoformat() and minute not in prints]
            low = datetime.fromisoformat(min(dirty)) if dirty else None
            high = datetime.fromisoformat(max(dirty)) + timedelta(minutes=1) if dirty else None
        written = 0
        if low is not None:
            written = _replace(MINUTE, low, high, aggregate(low, high, MINUTE))
            hour = floor_to(low, HOUR)
            written += _replace(HOUR, hour, None, _hours_from_minutes(hour))
        state.fingerprints = {minute: mark for minute, mark in (prints or {}).items() if minute >= frontier.isoformat()}
        TaskRollup.objects.filter(span=MINUTE, bucket__lt=minutes_from).delete()
        TaskRollup.objects.filter(
            span=HOUR, bucket__lt=floor_to(now - timedelta(days=settings.TASK_ROLLUP_HOUR_DAYS), HOUR)
        ).delete()
        state.complete_before, state.refreshed_at = frontier, now
        state.save(update_fields=["complete_before", "refreshed_at", "fingerprints"])
        return True, written


def rebuild(*, since: datetime | None = None, now: datetime | None = None) -> dict:
    """Recompute from the table: from `since` (its hour), or everything when None.

    Buckets in the range are replaced by what the table holds now, so the history of tasks
    deleted by retention in that range is lost.
    """
    with transaction.atomic():
        state, _ = TaskRollupState.objects.select_for_update().get_or_create(name=STATE_NAME)
        if since is None:
            TaskRollup.objects.all().delete()
            state.complete_before = None
        else:
            since = floor_to(since, HOUR)
            state.complete_before = min(since, state.complete_before or since)
        state.fingerprints = {}
        state.save(update_fields=["complete_before", "fingerprints"])
    return refresh(now=now, wait=True)


def state() -> TaskRollupState | None:
    return TaskRollupState.objects.filter(name=STATE_NAME).first()
