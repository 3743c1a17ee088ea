"""The owner's quotas on tasks and schedules (the figures: apps.accounts.services.quota_limits).

Tasks not yet final are counted on every submission, so the count is kept as an upper bound in
the cache: the last exact count plus every task accepted since (tasks finishing are not taken
off). While the bound stays within the quota a submission costs one cache increment; past it,
the exact count is taken again (capped at the quota, from an index of unfinished tasks) and
becomes the new bound. Two submissions racing at the very edge can overshoot by one request's
tasks: a quota protects capacity, it is not a billing figure.
"""

from datetime import timedelta
from itertools import pairwise

from django.core.cache import cache
from django.utils import timezone

from apps.accounts.services import quota_check, quota_limits, user_cache_key
from apps.core.exceptions import BacklogQuotaExceeded, QuotaExceeded

from . import cron
from .models import UNFINISHED_STATUSES, Schedule, Task

# How long a bound is trusted at most before an exact count.
BACKLOG_BOUND_SECONDS = 600
# A cron schedule's shortest gap is judged over this many of its next runs.
CRON_RUNS_CHECKED = 200


def unfinished_count(owner, *, cap: int) -> int:
    """The owner's tasks not yet final, counted up to `cap`."""
    return Task.objects.filter(owner=owner, status__in=UNFINISHED_STATUSES).values("pk")[:cap].count()


def check_backlog(owner, adding: int) -> None:
    """Refuse (BacklogQuotaExceeded, a 429) `adding` more tasks past the owner's quota."""
    key = user_cache_key(owner, "unfinished-bound")
    try:
        bound = cache.incr(key, adding)
    except ValueError:  # no bound yet (or it expired)
        bound = None
    limit = quota_limits(owner)["tasks_not_final"]
    if bound is not None and bound <= limit:
        return
    current = unfinished_count(owner, cap=limit + 1)
    quota_check(
        owner, "tasks_not_final", current=current, adding=adding, what="tasks not yet final", error=BacklogQuotaExceeded
    )
    cache.set(key, current + adding, BACKLOG_BOUND_SECONDS)


def shortest_gap(*, cron_expression: str, zone: str, interval_seconds: int | None) -> timedelta | None:
    """The shortest time between two runs of this timing (None: no valid timing to judge)."""
    if interval_seconds is not None:
        return timedelta(seconds=interval_seconds)
    try:
        runs = cron.occurrences(cron_expression, zone, after=timezone.now(), count=CRON_RUNS_CHECKED)
    except cron.CronError:
        return None
    return min((later.utc - earlier.utc for earlier, later in pairwise(runs)), default=None)


def check_schedule(owner, *, creating: bool, cron_expression: str, zone: str, interval_seconds: int | None) -> None:
    """Refuse a schedule past the owner's count, or one that would run more often than their
    minimum interval allows (staff owners have none)."""
    if creating:
        quota_check(owner, "schedules", current=Schedule.objects.filter(owner=owner).count(), what="schedules")
    if owner.is_staff:
        return
    minimum = quota_limits(owner)["schedule_min_interval_seconds"]
    gap = shortest_gap(cron_expression=cron_expression, zone=zone, interval_seconds=interval_seconds)
    if gap is not None and gap < timedelta(seconds=minimum):
        raise QuotaExceeded(
            f"Quota reached: a schedule may run at most once every {minimum:,} s; this one runs "
            f"{int(gap.total_seconds()):,} s apart.",
            quota="schedule_min_interval_seconds",
            limit=minimum,
            current=int(gap.total_seconds()),
        )
