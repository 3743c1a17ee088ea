"""Cron expressions in a time zone, with daylight-saving rules TaskFlow can promise.

A cron time is wall-clock time in the schedule's zone. Two days a year that clock misbehaves:
- spring forward: a time in the skipped hour (02:30 in Europe/Berlin) does not exist; the run
  happens at the same distance past the jump (03:30), once, and is flagged `gap`;
- fall back: a time in the repeated hour happens twice; the run happens at the first one
  only, and is flagged `repeated`.
Fields follow Celery's crontab (minute hour day-of-month month day-of-week, 0 = Sunday);
when both day fields are restricted a day must match both, as in Celery.
"""

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celery.schedules import ParseException, crontab, crontab_parser
from cron_descriptor import get_description

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
# Lowest and highest value of each field, as Celery's crontab reads them.
FIELD_BOUNDS = {"minute": (0, 59), "hour": (0, 23), "day of month": (1, 31), "month": (1, 12), "day of week": (0, 6)}
# Names the zone database holds that are not zones of their own: the system's local zone
# (differs per host), the "no zone" placeholder, and a POSIX rules file; posix/ and right/
# are copies of the tree (right/ with leap seconds, which datetime cannot represent).
NON_CANONICAL_ZONES = frozenset({"Factory", "localtime", "posixrules"})
NON_CANONICAL_ZONE_PREFIXES = ("posix/", "right/")
MAX_SCAN_DAYS = 4 * 366  # far enough for "29 2 29 2 *" (a leap day) to be found


class CronError(ValueError):
    pass


@functools.cache
def canonical_zones() -> frozenset[str]:
    return frozenset(
        name
        for name in available_timezones()
        if name not in NON_CANONICAL_ZONES and not name.startswith(NON_CANONICAL_ZONE_PREFIXES)
    )


def validate_zone(name: str) -> ZoneInfo:
    """A zone a schedule may be given: exactly a canonical IANA name, as spelled in the database."""
    if name not in canonical_zones():
        raise CronError(f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.")
    return parse_zone(name)


def parse_zone(name: str) -> ZoneInfo:
    """The zone of a stored schedule (validated with validate_zone when it was written)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'.") from None


def validate_cron(expression: str) -> crontab:
    """parse_cron, refusing also what Celery reads in a surprising way: a backwards range
    (Celery wraps `50-10` around the hour) and an empty or zero step."""
    schedule = parse_cron(expression)
    for name, part in zip(FIELD_NAMES, expression.split(), strict=True):
        for item in part.split(","):
            _check_item(name, part, item)
    return schedule


def _check_item(name: str, part: str, item: str) -> None:
    base, slash, step = item.partition("/")
    if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
        raise CronError(f"Invalid {name} field {part!r}: a step after '/' must be a whole number above 0.")
    low, dash, high = base.partition("-")
    if not (dash and low and high and low != "*"):
        return
    try:
        lowest, highest = FIELD_BOUNDS[name]
        parser = crontab_parser(highest + 1, lowest)
        first, last = (min(parser.parse(end)) for end in (low, high))
    except (ParseException, ValueError, TypeError):
        raise CronError(f"Invalid {name} field {part!r}: {base!r} is not a range.") from None
    if first > last:
        raise CronError(
            f"Invalid {name} field {part!r}: the range {base!r} runs backwards; "
            f"write it as two ranges, e.g. '{low}-{highest},{lowest}-{high}'."
        )


def parse_cron(expression: str) -> crontab:
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"A cron expression has 5 fields (minute hour day-of-month month day-of-week); got {len(parts)}."
        )
    try:
        return crontab(*parts[:2], day_of_month=parts[2], month_of_year=parts[3], day_of_week=parts[4])
    except (ParseException, ValueError, TypeError) as exc:
        for name, part in zip(FIELD_NAMES, parts, strict=True):
            try:
                crontab(**{_kwarg(name): part})
            except (ParseException, ValueError, TypeError) as field_exc:
                raise CronError(f"Invalid {name} field {part!r}: {field_exc}") from None
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
