"""systemd calendar events (systemd.time(7)), as `OnCalendar=` of a timer reads them.

A subset, checked at load so a timer never fails on the host or silently never elapses: the
shorthands, `[weekdays] [[*-]month-day] [hour:minute[:second]] [UTC]`, each component `*`, a number,
`a..b`, `a/step` or `a..b/step` (a number first, never `*`), comma lists. Left out, and refused with a reason: fixed years
(a schedule recurs), `~` (last days of a month), fractional seconds and time zones other than UTC
(they depend on the host's tzdata). tests/unit/test_spec_rules.py checks every accepted form
against `systemd-analyze calendar`.
"""
from __future__ import annotations

import re

SHORTHANDS = ("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly", "annually")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # a leap year: every day that can match
_ITEM = re.compile(r"(\*|\d{1,2})(?:\.\.(\d{1,2}))?(?:/(\d{1,2}))?")
EXAMPLES = "e.g. daily, hourly, '*-*-* 02:00:00', 'Mon..Fri 22:30' or 'Sun *-*-* 03:00 UTC'"


class CalendarError(ValueError):
    pass


def _values(text: str, low: int, high: int, what: str) -> set[int]:
    """The values one component matches, e.g. '0..30/10,45' -> {0, 10, 20, 30, 45}."""
    out: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if not match:
            raise CalendarError(f"{what} {item!r} is not *, a number, a..b, a/step or a..b/step")
        start, end, step = match.groups()
        if start == "*" and (end or step) is not None:
            raise CalendarError(f"{what} {item!r}: a range or repetition starts at a number, e.g. 0/15, not *")
        first = low if start == "*" else int(start)
        last = high if start == "*" or (step and end is None) else int(end or start)
        for number in (first, last):
            if not low <= number <= high:
                raise CalendarError(f"{what} {number} is out of range; allowed: {low} to {high}")
        if first > last:
            raise CalendarError(f"{what} range {item!r} runs backwards")
        if step is not None and int(step) == 0:
            raise CalendarError(f"{what} {item!r}: the step must be at least 1")
        out |= set(range(first, last + 1, int(step or 1)))
    return out


def _weekdays(text: str) -> None:
    for item in text.lower().split(","):
        ends = item.split("..")
        if len(ends) > 2 or not all(e in WEEKDAYS or e in _FULL_DAYS for e in ends):
            raise CalendarError(f"weekday {item!r} is not a day name (Mon..Sun) or a range of them")
        if len(ends) == 2 and _day_index(ends[0]) > _day_index(ends[1]):
            raise CalendarError(f"weekday range {item!r} runs backwards (weeks start on Monday)")


def _day_index(name: str) -> int:
    return WEEKDAYS.index(name[:3])


def _date(text: str) -> None:
    parts = text.split("-")
    if len(parts) == 3:
        if parts[0] != "*":
            raise CalendarError(f"year {parts[0]!r}: a schedule recurs, so the year is *")
        parts = parts[1:]
    if len(parts) != 2:
        raise CalendarError(f"date {text!r} is not [*-]month-day")
    if "~" in text:
        raise CalendarError("'~' (days from the end of the month) is not supported")
    months = _values(parts[0], 1, 12, "month")
    days = _values(parts[1], 1, 31, "day")
    if not any(day <= _DAYS_IN_MONTH[month - 1] for month in months for day in days):
        raise CalendarError(f"date {text!r} never occurs, so the timer would never elapse")


def _time(text: str) -> None:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise CalendarError(f"time {text!r} is not hour:minute[:second]")
    for part, (high, what) in zip(parts, ((23, "hour"), (59, "minute"), (59, "second"))):
        _values(part, 0, high, what)


def check_calendar(text: str) -> None:
    """Raise CalendarError with the reason when `text` is not an accepted calendar event."""
    if text.lower() in SHORTHANDS:
        return
    if not text or text != text.strip() or "  " in text or not text.isascii():
        raise CalendarError("spaces only between the parts, one each, and ASCII only")
    tokens = text.split(" ")
    if tokens[-1] == "UTC":
        tokens.pop()
    if not tokens or len(tokens) > 3:
        raise CalendarError("expected [weekdays] [date] [time] [UTC]")
    if "/" in tokens[-1] and tokens[-1][:1].isalpha():
        raise CalendarError(f"time zone {tokens[-1]!r}: only UTC (other zones depend on the host's tzdata)")
    kinds = []
    for token in tokens:
        kind = "time" if ":" in token else "date" if "-" in token or "*" in token or token[:1].isdigit() else "weekday"
        if kind in kinds or (kinds and "weekday" == kind) or (kind == "date" and "time" in kinds):
            raise CalendarError(f"{token!r} is out of place; the order is weekdays, date, time, time zone")
        kinds.append(kind)
        {"time": _time, "date": _date, "weekday": _weekdays}[kind](token)
