"""Weekly business hours: parsing the tenant file's `business_hours` and asking whether a moment is open.

Pure: no I/O and no clock reads; the caller passes `now`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class BusinessHoursError(ValueError):
    """`key` is the offending key inside `business_hours` (e.g. `sat`), or "" for the mapping itself."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class OpenInterval:
    """Minutes since local midnight; `end_min` may be 1440 ("24:00")."""

    start_min: int
    end_min: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


@dataclass(frozen=True, slots=True)
class BusinessHours:
    timezone: str
    # weekday (0 = Monday) -> open intervals, in order; a missing weekday is closed all day.
    weekly: tuple[tuple[OpenInterval, ...], ...]

    def is_open(self, now: datetime) -> bool:
        """Whether `now` (timezone-aware) falls in an open interval, in the tenant's time zone."""
        local = self.local_time(now)
        minute = local.hour * 60 + local.minute
        return any(i.start_min <= minute < i.end_min for i in self.weekly[local.weekday()])

    def local_time(self, now: datetime) -> datetime:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(ZoneInfo(self.timezone))

    def describe_week(self) -> list[str]:
        """One line per weekday, e.g. `Saturday: 10:00-14:00` or `Sunday: closed`."""
        lines = []
        for day, intervals in zip(DAY_NAMES, self.weekly, strict=True):
            hours = ", ".join(str(i) for i in intervals) if intervals else "closed"
            lines.append(f"{day}: {hours}")
        return lines


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_of(key: str) -> list[int]:
    if key in DAYS:
        return [DAYS.index(key)]
    first, sep, last = key.partition("-")
    if sep and first in DAYS and last in DAYS:
        start, end = DAYS.index(first), DAYS.index(last)
        # A range may wrap past Sunday: fri-mon is Friday, Saturday, Sunday, Monday.
        return [(start + offset) % 7 for offset in range((end - start) % 7 + 1)]
    raise BusinessHoursError(key, f"unknown key '{key}' (use timezone, a day like mon or a range like mon-fri)")


def _intervals_of(key: str, value: object) -> tuple[OpenInterval, ...]:
    if not isinstance(value, str):
        raise BusinessHoursError(key, f"{value!r} is not \"HH:MM-HH:MM\" or \"closed\" (quote it)")
    if value.strip().lower() == "closed":
        return ()
    intervals = []
    for part in value.split(","):
        match = _INTERVAL.match(part.strip())
        if not match:
            raise BusinessHoursError(key, f"'{value}' is not \"HH:MM-HH:MM\" or \"closed\"")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
            raise BusinessHoursError(key, f"'{value}' has an invalid time")
        if end <= start:
            raise BusinessHoursError(key, f"'{value}' ends before it starts (split overnight hours over two days)")
        intervals.append(OpenInterval(start, end))
    intervals.sort(key=lambda i: i.start_min)
    for before, after in zip(intervals, intervals[1:], strict=False):
        if after.start_min < before.end_min:
            raise BusinessHoursError(key, f"'{value}' has overlapping intervals")
    return tuple(intervals)


def parse_business_hours(raw: object) -> BusinessHours:
    """Parse `{timezone: America/New_York, mon-fri: "09:00-18:00", sat: "10:00-14:00"}`.

    Days not named are closed. Naming a day twice (e.g. `mon-fri` and `fri`) is an error.

    Raises:
        BusinessHoursError: naming the offending key.
    """
    if not isinstance(raw, dict):
        raise BusinessHoursError("", "must be a mapping with timezone and day keys")
    timezone = raw.get("timezone")
    if not isinstance(timezone, str) or not timezone:
        raise BusinessHoursError("timezone", "is required, e.g. America/New_York")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BusinessHoursError("timezone", f"'{timezone}' is not a known time zone") from None
    weekly: list[tuple[OpenInterval, ...] | None] = [None] * 7
    owner: dict[int, str] = {}
    for key, value in raw.items():
        if key == "timezone":
            continue
        key = str(key)
        days = _days_of(key)
        intervals = _intervals_of(key, value)
        for day in days:
            if day in owner:
                raise BusinessHoursError(key, f"{DAY_NAMES[day]} is already set by '{owner[day]}'")
            owner[day] = key
            weekly[day] = intervals
    return BusinessHours(timezone=timezone, weekly=tuple(w or () for w in weekly))
