"""Schedules: create, change, pause, run now, and fire exactly once per run.

Each Schedule is mirrored by a django-celery-beat PeriodicTask written in the same
transaction, so beat's database scheduler wakes TaskFlow up at the right times. Whether a run
happens is decided here: a firing claims the schedule's `next_run_at` with one conditional
UPDATE. A second beat, a late wake-up or the catch-up sweep therefore never fires one run
twice, and a run that beat missed (a daylight-saving gap, beat down) is fired by the sweep.
"""

import json
import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from apps.core.exceptions import BacklogQuotaExceeded, Conflict, InvalidInput

from . import cron, quotas
from .models import FINAL_STATUSES, OverlapPolicy, Schedule, Task, TaskPriority, TaskTrigger
from .services import TaskSpec, task_build, task_submit

logger = logging.getLogger(__name__)

FIRE_TASK = "taskflow.fire_schedule"
# A wake-up this much before next_run_at still counts (clocks and message latency).
FIRE_EARLY_TOLERANCE = timedelta(seconds=5)


@dataclass
class ScheduleSpec:
    name: str
    kind: str
    payload: dict
    cron: str = ""
    interval_seconds: int | None = None
    timezone: str = "UTC"
    priority: str = TaskPriority.NORMAL
    enabled: bool = True
    overlap_policy: str = OverlapPolicy.ALLOW


def schedule_clean(*, owner, spec: ScheduleSpec, exclude_pk=None) -> dict:
    """Check the timing and the kind/payload like a submission would; returns the clean payload.

    Raises InvalidInput with every problem found, by field; then QuotaExceeded past the owner's
    count of schedules (on create) or below their minimum interval (when the timing is new).
    """
    errors = {}
    if bool(spec.cron) == (spec.interval_seconds is not None):
        errors["cron"] = ["Give either a cron expression or interval_seconds, not both and not neither."]
    if spec.cron:
        try:
            cron.validate_cron(spec.cron)
        except cron.CronError as exc:
            errors["cron"] = [str(exc)]
    try:
        cron.validate_zone(spec.timezone)
    except cron.CronError as exc:
        errors["timezone"] = [str(exc)]
    duplicate = Schedule.objects.filter(owner=owner, name=spec.name).exclude(pk=exclude_pk).exists()
    if duplicate:
        errors["name"] = ["You already have a schedule with this name."]
    try:
        task = task_build(
            owner=owner, spec=TaskSpec(kind=spec.kind, payload=spec.payload, priority=spec.priority), now=timezone.now()
        )
    except InvalidInput as exc:
        errors.update(exc.fields)
        task = None
    if errors:
        raise InvalidInput(errors)
    timing = (spec.cron, spec.interval_seconds if not spec.cron else None, spec.timezone)
    existing = None
    if exclude_pk is not None:
        stored = Schedule.objects.filter(pk=exclude_pk)
        existing = stored.values_list("owner_id", "cron", "interval_seconds", "timezone").first()
    new_to_owner = existing is None or existing[0] != owner.pk
    if new_to_owner or tuple(existing[1:]) != timing:
        quotas.check_schedule(
            owner,
            creating=new_to_owner,
            cron_expression=spec.cron,
            zone=spec.timezone,
            interval_seconds=timing[1],
        )
    return task.payload


def next_run_after(schedule: Schedule, after: datetime) -> datetime:
    if schedule.cron:
        return cron.next_cron_run(schedule.cron, schedule.timezone, after=after)
    return after + timedelta(seconds=schedule.interval_seconds)


def _sync_periodic_task(schedule: Schedule) -> None:
    """Mirror the schedule into beat's tables (same transaction as the caller)."""
    periodic = schedule.periodic_task or PeriodicTask(name=f"taskflow-schedule-{schedule.pk}", task=FIRE_TASK)
    periodic.kwargs = json.dumps({"schedule_id": str(schedule.pk)})
    periodic.enabled = schedule.enabled
    periodic.description = f"TaskFlow schedule {schedule.name!r} of {schedule.owner}"
    if schedule.cron:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split()
        periodic.crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone=schedule.timezone,
        )
        periodic.interval = None
    else:
        periodic.interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.interval_seconds, period=IntervalSchedule.SECONDS
        )
        periodic.crontab = None
    periodic.save()
    if schedule.periodic_task_id != periodic.pk:
        schedule.periodic_task = periodic
        schedule.save(update_fields=["periodic_task", "updated_at"])


@transaction.atomic
def schedule_create(*, owner, spec: ScheduleSpec) -> Schedule:
    payload = schedule_clean(owner=owner, spec=spec)
    schedule = Schedule(owner=owner, **{f.name: getattr(spec, f.name) for f in fields(spec)})
    schedule.payload = payload
    schedule.interval_seconds = spec.interval_seconds if not spec.cron else None
    schedule.next_run_at = next_run_after(schedule, timezone.now())
    schedule.save()
    _sync_periodic_task(schedule)
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, spec: ScheduleSpec) -> Schedule:
    payload = schedule_clean(owner=schedule.owner, spec=spec, exclude_pk=schedule.pk)
    timing_changed = (schedule.cron, schedule.interval_seconds, schedule.timezone) != (
        spec.cron,
        spec.interval_seconds,
        spec.timezone,
    )
    for f in fields(spec):
        setattr(schedule, f.name, getattr(spec, f.name))
    schedule.payload = payload
    if spec.enabled:
        schedule.paused_reason = ""
    if timing_changed or schedule.next_run_at is None:
        schedule.next_run_at = next_run_after(schedule, timezone.now())
    schedule.save()
    _sync_periodic_task(schedule)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: Schedule) -> None:
    periodic = schedule.periodic_task
    schedule.delete()
    if periodic is not None:
        periodic.delete()


@transaction.atomic
def schedule_pause(*, schedule: Schedule, reason: str = "") -> Schedule:
    schedule.enabled = False
    schedule.paused_reason = reason or "Paused"
    schedule.save(update_fields=["enabled", "paused_reason", "updated_at"])
    _sync_periodic_task(schedule)
    return schedule


@transaction.atomic
def schedule_resume(*, schedule: Schedule) -> Schedule:
    schedule.enabled = True
    schedule.paused_reason = ""
    # Runs missed while paused are not made up for: the next one is after now.
    schedule.next_run_at = next_run_after(schedule, timezone.now())
    schedule.save(update_fields=["enabled", "paused_reason", "next_run_at", "updated_at"])
    _sync_periodic_task(schedule)
    return schedule


def _submit_run(schedule: Schedule, *, trigger: str, actor=None) -> Task:
    spec = TaskSpec(kind=schedule.kind, payload=schedule.payload, priority=schedule.priority, title=schedule.name)
    task, _ = task_submit(owner=schedule.owner, spec=spec, trigger=trigger, schedule=schedule, actor=actor)
    Schedule.objects.filter(pk=schedule.pk).update(last_run_task=task)
    schedule.last_run_task = task
    return task


@transaction.atomic
def schedule_run_now(*, schedule: Schedule, actor) -> Task:
    """Submit one run at once, linked to the schedule and marked as run now; timing is unchanged."""
    try:
        return _submit_run(schedule, trigger=TaskTrigger.RUN_NOW, actor=actor)
    except InvalidInput as exc:
        raise Conflict(f"The schedule's kind or payload is no longer valid: {exc.detail}") from None


def schedule_fire(*, schedule_id, now: datetime | None = None) -> Task | None:
    """Fire the schedule's due run, once. None when it is not due, already fired, or skipped."""
    now = now or timezone.now()
    schedule = Schedule.objects.select_related("owner", "last_run_task").filter(pk=schedule_id).first()
    if schedule is None or not schedule.enabled or schedule.next_run_at is None:
        return None
    tolerance = FIRE_EARLY_TOLERANCE
    if schedule.interval_seconds:
        tolerance = min(tolerance, timedelta(seconds=schedule.interval_seconds / 2))
    if schedule.next_run_at > now + tolerance:
        return None
    following = next_run_after(schedule, max(now, schedule.next_run_at))
    with transaction.atomic():
        claimed = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=schedule.next_run_at).update(
            next_run_at=following, last_fired_at=now
        )
        if not claimed:
            return None  # another beat or the catch-up sweep fired this run
        previous = schedule.last_run_task
        if (
            schedule.overlap_policy == OverlapPolicy.SKIP
            and previous is not None
            and previous.status not in FINAL_STATUSES
        ):
            Schedule.objects.filter(pk=schedule.pk).update(skipped_runs=schedule.skipped_runs + 1)
            logger.info("schedule %s: run skipped, task %s is still %s", schedule.pk, previous.pk, previous.status)
            return None
        try:
            return _submit_run(schedule, trigger=TaskTrigger.SCHEDULE)
        except InvalidInput as exc:
            logger.error("schedule %s cannot submit its run: %s", schedule.pk, exc.detail)
            return None
        except BacklogQuotaExceeded as exc:
            # The owner's tasks are not finishing: this run is skipped, the next comes as usual.
            Schedule.objects.filter(pk=schedule.pk).update(skipped_runs=F("skipped_runs") + 1)
            logger.warning("schedule %s: run skipped, %s", schedule.pk, exc.message)
            return None


def fire_due_schedules(*, now: datetime | None = None) -> int:
    """Catch-up sweep: fire every enabled schedule whose run is overdue (beat missed it)."""
    now = now or timezone.now()
    overdue = now - timedelta(seconds=settings.SCHEDULE_CATCH_UP_AFTER)
    ids = Schedule.objects.filter(enabled=True, next_run_at__lte=overdue).values_list("pk", flat=True)[:500]
    return sum(1 for schedule_id in ids if schedule_fire(schedule_id=schedule_id, now=now))


def schedule_preview(*, schedule: Schedule, count: int, after: datetime | None = None) -> list[dict]:
    """The next `count` runs in the schedule's zone and in UTC, flagging daylight-saving edges."""
    after = after or timezone.now()
    zone = cron.parse_zone(schedule.timezone)
    if schedule.cron:
        runs = cron.occurrences(schedule.cron, schedule.timezone, after=after, count=count)
        return [{"local": run.at.isoformat(), "utc": run.utc.isoformat(), "flag": run.flag} for run in runs]
    first = schedule.next_run_at if schedule.next_run_at and schedule.next_run_at > after else after
    step = timedelta(seconds=schedule.interval_seconds)
    return [
        {"local": (first + i * step).astimezone(zone).isoformat(), "utc": (first + i * step).isoformat(), "flag": ""}
        for i in range(count)
    ]
