"""Cron specs: validated with messages that say what is wrong, ticks computed in a time
zone with well-defined DST behaviour.

Specs have 5 fields (``minute hour day-of-month month day-of-week``) or 6 with seconds
first (``second minute hour day-of-month month day-of-week``), or an alias (``@hourly``,
``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``).

Ticks are wall-clock times in the schedule's zone, turned into instants:

- a wall time that does not exist (the spring-forward gap) fires at the end of the gap,
  once, however many ticks of the spec fell in it;
- a wall time that exists twice (the fall-back overlap) fires once, at its first
  occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from eventbus.errors import ConfigurationError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


SECOND = Field("second", 0, 59)
MINUTE = Field("minute", 0, 59)
HOUR = Field("hour", 0, 23)
DOM = Field("day-of-month", 1, 31)
MONTH = Field("month", 1, 12, MONTHS)
DOW = Field("day-of-week", 0, 7, DAYS)
ITEM = re.compile(r"^(?P<range>\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[^/]*))?$")


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated spec; `expression` is what croniter runs."""

    source: str
    expression: str
    has_seconds: bool


def validate_cron(spec: str) -> CronSpec:
    """Check a cron spec; raise ConfigurationError saying exactly what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"cron spec {spec!r}: empty; expected e.g. '0 3 * * *'")
    text = " ".join(spec.split())
    expression = ALIASES.get(text.lower(), text)
    if expression.startswith("@"):
        raise ConfigurationError(
            f"cron spec {spec!r}: unknown alias {text!r}; known: {', '.join(ALIASES)}"
        )
    parts = expression.split(" ")
    fields: tuple[Field, ...]
    if len(parts) == 5:
        fields = (MINUTE, HOUR, DOM, MONTH, DOW)
    elif len(parts) == 6:
        fields = (SECOND, MINUTE, HOUR, DOM, MONTH, DOW)
    else:
        raise ConfigurationError(
            f"cron spec {spec!r}: {len(parts)} fields; expected 5 (minute hour "
            "day-of-month month day-of-week) or 6 (second first)"
        )
    for text_field, field in zip(parts, fields, strict=True):
        problem = _check_field(text_field, field)
        if problem:
            raise ConfigurationError(f"cron spec {spec!r}: {problem}")
    try:
        it = croniter(expression, datetime(2000, 1, 1), second_at_beginning=len(parts) == 6)
    except Exception as exc:  # anything the field checks let through
        raise ConfigurationError(f"cron spec {spec!r}: {exc}") from None
    try:
        it.get_next(datetime)
    except Exception:
        raise ConfigurationError(
            f"cron spec {spec!r}: never matches (check the day-of-month against the month, "
            "e.g. there is no 30 February)"
        ) from None
    return CronSpec(spec, expression, has_seconds=len(parts) == 6)


def _check_field(text: str, field: Field) -> str | None:
    for item in text.split(","):
        problem = _check_item(item, field) if item else f"empty list item in the {field.name} field"
        if problem:
            return problem
    return None


def _check_item(item: str, field: Field) -> str | None:
    if field is DOM and item.upper() == "L":
        return None  # the last day of the month
    if field is DOW and re.fullmatch(r"[0-9A-Za-z]+(#[1-5]|L)", item):
        return _check_value(re.split(r"[#L]", item)[0], field)
    match = ITEM.match(item)
    if match is None:
        return f"{item!r} is not valid in the {field.name} field"
    part, step = match.group("range"), match.group("step")
    if part == "?" and field not in (DOM, DOW):
        return f"'?' is only allowed in day-of-month and day-of-week, not {field.name}"
    problem = _check_step(item, step, field) if step is not None else None
    if problem or part in ("*", "?"):
        return problem
    return _check_range(part, field)


def _check_step(item: str, step: str, field: Field) -> str | None:
    if not step.isdigit() or int(step) == 0:
        return f"step {step!r} in {item!r} ({field.name}) must be a whole number >= 1"
    if int(step) > field.high - field.low + 1:
        return f"step {step} in {item!r} is larger than the {field.name} range"
    return None


def _check_range(part: str, field: Field) -> str | None:
    low, _, high = part.partition("-")
    for value in (low, high) if high else (low,):
        problem = _check_value(value, field)
        if problem:
            return problem
    if high and _number(low, field) > _number(high, field, end=True):
        return f"range {part!r} in the {field.name} field is reversed (start after end)"
    return None


def _number(value: str, field: Field, *, end: bool = False) -> int:
    if value.isdigit():
        return int(value)
    assert field.names is not None
    number = field.names[value.upper()]
    return 7 if end and field is DOW and number == 0 else number  # MON-SUN: SUN is 7


def _check_value(value: str, field: Field) -> str | None:
    if value.isdigit():
        number = int(value)
        if not field.low <= number <= field.high:
            return f"{number} is out of range for the {field.name} field ({field.low}-{field.high})"
        return None
    if field.names is not None and value.upper() in field.names:
        return None
    hint = f" or a name ({', '.join(field.names)})" if field.names else ""
    return f"{value!r} is not a number{hint} in the {field.name} field"


def zone(name: str) -> tzinfo:
    """A time zone by IANA name; ConfigurationError naming the problem."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _instant(naive: datetime, tz: tzinfo) -> datetime:
    """A local wall time as a UTC instant: its first occurrence in an overlap, the end of
    the gap when it does not exist."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # in the gap: fold=1 reads it with the offset after the change, fold=0 before; the
    # transition lies between the two instants
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


def ticks_after(spec: CronSpec, tz: tzinfo, after: datetime) -> Iterator[datetime]:
    """The spec's ticks strictly after `after` (aware), as UTC instants, increasing."""
    after_utc = after.astimezone(UTC)
    local = after_utc.astimezone(tz).replace(tzinfo=None)
    # near a change of the zone's offset, start an hour back in wall time, so ticks in an
    # overlap or gap are not stepped over; elsewhere (always, in UTC) start at `after`:
    # an hour back costs 3,600 steps for a schedule with a seconds field
    back = timedelta(hours=1) if _offset_changes_near(tz, after_utc) else timedelta(0)
    it = croniter(spec.expression, local - back, second_at_beginning=spec.has_seconds)
    last: datetime | None = None
    while True:
        instant = _instant(it.get_next(datetime), tz)
        if instant > after_utc and instant != last:
            last = instant
            yield instant


def _offset_changes_near(
    tz: tzinfo, instant: datetime, window: timedelta = timedelta(hours=3)
) -> bool:
    """Whether the zone's UTC offset differs anywhere within `window` of `instant` (DST
    transitions move it by at most a few hours; checking both ends and the middle finds
    any change closer than that)."""
    offsets = {(instant + d).astimezone(tz).utcoffset() for d in (-window, timedelta(0), window)}
    return len(offsets) > 1


def next_tick(spec: CronSpec, tz: tzinfo, after: datetime) -> datetime:
    return next(ticks_after(spec, tz, after))


def ticks_between(
    spec: CronSpec, tz: tzinfo, after: datetime, until: datetime, *, limit: int
) -> list[datetime]:
    """Ticks in (after, until], at most `limit` (the latest ones)."""
    found: list[datetime] = []
    for tick in ticks_after(spec, tz, after):
        if tick > until:
            break
        found.append(tick)
        if len(found) > limit:
            found.pop(0)
    return found
