"""Cron expressions in a time zone, with daylight-saving rules TaskFlow can promise.

A cron time is wall-clock time in the schedule's zone. Two days a year that clock misbehaves:
- spring forward: a time in the skipped hour (02:30 in Europe/Berlin) does not exist; the run
  happens at the same distance past the jump (03:30), once, and is flagged `gap`;
- fall back: a time in the repeated hour happens twice; the run happens at the first one
  only, and is flagged `repeated`.
Fields follow Celery's crontab (minute hour day-of-month month day-of-week, 0 = Sunday);
when both day fields are restricted a day must match both, as in Celery.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab
from cron_descriptor import get_description

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
MAX_SCAN_DAYS = 4 * 366  # far enough for "29 2 29 2 *" (a leap day) to be found


class CronError(ValueError):
    pass


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.") from None


def parse_cron(expression: str) -> crontab:
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"A cron expression has 5 fields (minute hour day-of-month month day-of-week); got {len(parts)}."
        )
    try:
        return crontab(*parts[:2], day_of_month=parts[2], month_of_year=parts[3], day_of_week=parts[4])
    except (ValueError, TypeError) as exc:
        for name, part in zip(FIELD_NAMES, parts, strict=True):
            try:
                crontab(**{_kwarg(name): part})
            except (ValueError, TypeError):
                raise CronError(f"Invalid {name} field {part!r}: {exc}") from None
        raise CronError(f"Invalid cron expression: {exc}") from None


def _kwarg(name: str) -> str:
    return {
        "minute": "minute",
        "hour": "hour",
        "day of month": "day_of_month",
        "month": "month_of_year",
        "day of week": "day_of_week",
    }[name]


def describe(expression: str) -> str:
    try:
        return get_description(expression)
    except Exception:
        return expression


@dataclass(frozen=True)
class Occurrence:
    at: datetime  # aware, in the schedule's zone
    wall_time: datetime  # naive wall-clock time the cron asked for
    flag: str = ""  # "", "gap" or "repeated"

    @property
    def utc(self) -> datetime:
        return self.at.astimezone(UTC)


def _day_matches(cron: crontab, day: date) -> bool:
    return (
        day.month in cron.month_of_year and day.day in cron.day_of_month and (day.weekday() + 1) % 7 in cron.day_of_week
    )


def _resolve(wall: datetime, zone: ZoneInfo) -> Occurrence:
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if round_trip != wall:
        # In the skipped hour: fold=0 reads it with the offset before the jump, which lands
        # the same distance past the jump.
        return Occurrence(at=first.astimezone(UTC).astimezone(zone), wall_time=wall, flag="gap")
    if first.utcoffset() != second.utcoffset():
        return Occurrence(at=first, wall_time=wall, flag="repeated")
    return Occurrence(at=first, wall_time=wall)


def occurrences(expression: str, zone_name: str, *, after: datetime, count: int) -> list[Occurrence]:
    """The next `count` runs strictly after `after` (aware), each at a distinct instant."""
    cron, zone = parse_cron(expression), parse_zone(zone_name)
    start_local = after.astimezone(zone)
    found: list[Occurrence] = []
    seen: set[datetime] = set()
    day = start_local.date() - timedelta(days=1)  # a gap shift can carry yesterday's last run forward
    for _ in range(MAX_SCAN_DAYS):
        if _day_matches(cron, day):
            for hour in sorted(cron.hour):
                for minute in sorted(cron.minute):
                    occurrence = _resolve(datetime.combine(day, time(hour, minute)), zone)
                    instant = occurrence.utc
                    if instant <= after or instant in seen:
                        continue
                    seen.add(instant)
                    found.append(occurrence)
        if len(found) >= count and day > start_local.date():
            break
        day += timedelta(days=1)
    found.sort(key=lambda occurrence: occurrence.utc)
    return found[:count]


def next_cron_run(expression: str, zone_name: str, *, after: datetime) -> datetime | None:
    upcoming = occurrences(expression, zone_name, after=after, count=1)
    return upcoming[0].utc if upcoming else None
