"""The owner's quotas on tasks and schedules (the figures: apps.accounts.services.quota_limits).

Tasks not yet final are counted on every submission, so what is left of the quota is kept in
the cache as a lower bound, the headroom: the quota less the last exact count and every task
accepted since (tasks finishing are not given back). While the headroom covers a submission it
costs one cache decrement, one round trip: neither the count nor the quota's figures are read.
Past it, the exact count is taken again (capped at the quota, from an index of unfinished
tasks) against the quota's figures, and sets the new headroom. A change of the owner's figures
drops the headroom (backlog_forget, on a Quota's save or delete: apps.py), and the default
quota is part of the key, so either applies at the next submission. Two submissions racing at
the very edge can overshoot by one request's tasks: a quota protects capacity, it is not a
billing figure.
"""

from datetime import timedelta
from itertools import pairwise

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.accounts.services import quota_check, quota_limits, user_cache_key
from apps.core.exceptions import BacklogQuotaExceeded, QuotaExceeded

from . import cron
from .models import UNFINISHED_STATUSES, Schedule, Task

# How long a headroom is trusted at most before an exact count.
BACKLOG_HEADROOM_SECONDS = 600
# A cron schedule's shortest gap is judged over this many of its next runs.
CRON_RUNS_CHECKED = 200


def unfinished_count(owner, *, cap: int) -> int:
    """The owner's tasks not yet final, counted up to `cap`."""
    return Task.objects.filter(owner=owner, status__in=UNFINISHED_STATUSES).values("pk")[:cap].count()


def _headroom_key(owner) -> str:
    return user_cache_key(owner, f"backlog-headroom:{settings.QUOTAS['tasks_not_final']}")


def check_backlog(owner, adding: int) -> None:
    """Refuse (BacklogQuotaExceeded, a 429) `adding` more tasks past the owner's quota."""
    key = _headroom_key(owner)
    try:
        headroom = cache.decr(key, adding)
    except ValueError:  # no headroom kept yet (or it expired, or the figures changed)
        headroom = None
    if headroom is not None and headroom >= 0:
        return
    limit = quota_limits(owner)["tasks_not_final"]
    current = unfinished_count(owner, cap=limit + 1)
    quota_check(
        owner, "tasks_not_final", current=current, adding=adding, what="tasks not yet final", error=BacklogQuotaExceeded
    )
    cache.set(key, limit - current - adding, BACKLOG_HEADROOM_SECONDS)


def backlog_forget(owner) -> None:
    """Drop the kept headroom: the next submission counts exactly, against the current figures."""
    cache.delete(_headroom_key(owner))


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
