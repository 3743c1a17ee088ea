"""Reads for the admin dashboard. Live figures come from the task table through the indexes
of the few live rows (`task_status_created`); everything about finished tasks comes from the
rollups (rollups.py), never from scanning the table, so they stay fast at tens of millions."""

import operator
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Q, Sum

from . import dispatch, fairness, rollups
from .models import CLAIMABLE_STATUSES, FINAL_STATUSES, Task, TaskRollup, TaskStatus
from .registry import all_kinds
from .state_machine import CLAIM_GRACE
from .transitions import _load_queries

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


# --- Concurrency limits: what each limit holds now (the admin's list and the dashboard) --------

LIMIT_QUERIES = {
    name: sql.format(claimable=", ".join(f"'{status}'" for status in CLAIMABLE_STATUSES))
    for name, sql in _load_queries(Path(__file__).parent / "sql" / "limits.sql").items()
}


# Waiting tasks are counted up to this many per scope; past it the figure says "more than".
WAITING_COUNTED = 10_000


@dataclass(frozen=True)
class ScopeUse:
    """One limited scope now: its limit, its tasks running, and its claimable, due tasks (which
    wait for a slot while the scope is at its limit, else for a worker or their turn), counted
    up to WAITING_COUNTED + 1."""

    limit: int
    running: int
    waiting: int

    @property
    def at_limit(self) -> bool:
        return self.running >= self.limit

    @property
    def waiting_text(self) -> str:
        return f"more than {WAITING_COUNTED:,}" if self.waiting > WAITING_COUNTED else f"{self.waiting:,}"


@dataclass(frozen=True)
class OwnerUse(ScopeUse):
    owner_id: int = 0
    email: str = ""
    own: bool = True  # the owner's own limit; False: the default for each owner


@dataclass
class LimitsOverview:
    kinds: dict[str, ScopeUse] = field(default_factory=dict)
    # Owners with a limit of their own, and owners at the default limit.
    owners: dict[int, OwnerUse] = field(default_factory=dict)
    every_owner: int | None = None
    owners_waiting: int = 0  # owners with claimable tasks (the fair claim's round-robin)

    def __bool__(self) -> bool:
        return bool(self.kinds or self.owners) or self.every_owner is not None

    @property
    def owners_at_limit(self) -> list[OwnerUse]:
        """Owners at their limit, the most waiting first."""
        full = [use for use in self.owners.values() if use.at_limit]
        return sorted(full, key=lambda use: (-use.waiting, -use.running, use.email))

    @property
    def at_default(self) -> list[OwnerUse]:
        return [use for use in self.owners.values() if not use.own]


def owners_with_work() -> set[int]:
    """Owners with claimable tasks: a loose index scan on PostgreSQL, a DISTINCT elsewhere."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(LIMIT_QUERIES["owners_with_work"])
            return {owner_id for (owner_id,) in cursor.fetchall()}
    claimable = Task.objects.filter(status__in=CLAIMABLE_STATUSES).order_by()
    return set(claimable.values_list("owner_id", flat=True).distinct())


def _waiting(*, now: datetime, scope: str, keys: list) -> Counter:
    """Claimable, due tasks of each kind or owner of `keys`, counted up to WAITING_COUNTED + 1
    each (one round trip on PostgreSQL): what a backlog costs stays bounded."""
    if not keys:
        return Counter()
    due = now + CLAIM_GRACE
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(LIMIT_QUERIES[f"waiting_by_{scope}"], {"keys": keys, "due": due, "cap": WAITING_COUNTED + 1})
            return Counter(dict(cursor.fetchall()))
    waiting = Task.objects.filter(Q(run_at__isnull=True) | Q(run_at__lte=due), status__in=CLAIMABLE_STATUSES)
    field_name = "kind" if scope == "kind" else "owner_id"
    return Counter({key: waiting.filter(**{field_name: key})[: WAITING_COUNTED + 1].count() for key in keys})


def limits_overview(*, now: datetime) -> LimitsOverview:
    """Every limit with what it holds now, in six small queries whatever the table's size: the
    running tasks are few, owners with work are found by a loose scan, and waiting tasks are
    counted for the limited scopes only, up to WAITING_COUNTED each."""
    limits = fairness.read_limits()
    waiting_owners = owners_with_work()
    overview = LimitsOverview(every_owner=limits.every_owner, owners_waiting=len(waiting_owners))
    if not limits:
        return overview
    running = Task.objects.filter(status=TaskStatus.RUNNING).order_by().values_list("kind", "owner_id")
    by_kind, by_owner = Counter(), Counter()
    for kind, owner_id, n in running.annotate(n=Count("pk")):
        by_kind[kind] += n
        by_owner[owner_id] += n
    if limits.kinds:
        waiting = _waiting(now=now, scope="kind", keys=sorted(limits.kinds))
        overview.kinds = {
            kind: ScopeUse(limit=limit, running=by_kind[kind], waiting=waiting[kind])
            for kind, limit in sorted(limits.kinds.items())
        }
    at_default = set()
    if limits.every_owner is not None:
        at_default = {
            owner_id
            for owner_id in waiting_owners | set(by_owner)
            if owner_id not in limits.owners and by_owner[owner_id] >= limits.every_owner
        }
    shown = set(limits.owners) | at_default
    if shown:
        waiting = _waiting(now=now, scope="owner", keys=sorted(shown))
        emails = dict(get_user_model().objects.filter(pk__in=shown).values_list("pk", "email"))
        overview.owners = {
            owner_id: OwnerUse(
                limit=limits.owner_limit(owner_id),
                running=by_owner[owner_id],
                waiting=waiting[owner_id],
                owner_id=owner_id,
                email=emails.get(owner_id, f"user {owner_id}"),
                own=owner_id in limits.owners,
            )
            for owner_id in shown
        }
    return overview
