"""Cron specs and schedule declarations: mistakes fail at registration with a message
naming the schedule, the spec and the problem; ticks are right across DST changes."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from eventbus import ConfigurationError, Event, Router
from eventbus.schedules import validate_cron
from eventbus.schedules.cron import ticks_between, zone


class Reminder(Event, stream="reminders"):
    text: str = ""


INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("   ", "empty"),
    ("* * * *", "4 fields; expected 5"),
    ("* * * * * * *", "7 fields; expected 5"),
    ("*", "1 fields"),
    ("60 * * * *", "60 is out of range for the minute field (0-59)"),
    ("* 24 * * *", "24 is out of range for the hour field (0-23)"),
    ("* * 0 * *", "0 is out of range for the day-of-month field (1-31)"),
    ("* * 32 * *", "32 is out of range for the day-of-month field"),
    ("* * * 0 *", "0 is out of range for the month field (1-12)"),
    ("* * * 13 *", "13 is out of range for the month field"),
    ("* * * * 8", "8 is out of range for the day-of-week field (0-7)"),
    ("60 * * * * *", "60 is out of range for the second field (0-59)"),
    ("*/0 * * * *", "step '0' in '*/0' (minute) must be a whole number >= 1"),
    ("*/x * * * *", "step 'x'"),
    ("*/61 * * * *", "step 61 in '*/61' is larger than the minute range"),
    ("5-1 * * * *", "range '5-1' in the minute field is reversed"),
    ("* 20-10 * * *", "range '20-10' in the hour field is reversed"),
    ("1,,2 * * * *", "empty list item in the minute field"),
    ("a b c d e", "'a' is not a number in the minute field"),
    ("* * * FOO *", "'FOO' is not a number or a name (JAN"),
    ("* * * * FUNDAY", "'FUNDAY' is not a number or a name (SUN"),
    ("1-2-3 * * * *", "'1-2-3' is not valid in the minute field"),
    ("? * * * *", "'?' is only allowed in day-of-month and day-of-week"),
    ("@fortnightly", "unknown alias '@fortnightly'"),
    ("*/5/2 * * * *", "'*/5/2' is not valid"),
    ("1.5 * * * *", "'1.5' is not valid"),
    ("-1 * * * *", "'-1' is not valid"),
    ("* * * * 9#2", "9 is out of range for the day-of-week field"),
    ("0 0 30 2 *", "never matches"),
    ("0 0 31 4,6,9,11 *", "never matches"),
]

VALID = [
    "0 3 * * *",
    "0 9 * * MON-SUN",
    "0 9 * * SAT-SUN",
    "0 9 * * 6-SUN",
    "*/15 * * * *",
    "0 9-17 * * MON-FRI",
    "0 0 1 JAN,JUL *",
    "30 2 L * *",
    "0 10 * * 1#2",
    "* * * * * *",
    "*/10 * * * * *",
    "0 0 * * 7",
    "@daily",
    "@HOURLY",
    "5,10,15-20/2 * * * *",
    "0 12 ? * SUN",
]


@pytest.mark.parametrize(("spec", "problem"), INVALID)
def test_invalid_specs_say_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_cron(spec)
    assert problem in str(info.value)
    assert f"cron spec {spec!r}" in str(info.value)


@pytest.mark.parametrize("spec", VALID)
def test_valid_specs(spec: str) -> None:
    cron = validate_cron(spec)
    assert cron.source == spec
    assert cron.has_seconds == (len(cron.expression.split()) == 6)


async def noop(tick: datetime) -> None:
    return None


def two_args(tick: datetime, extra: int) -> None:
    return None


def no_args() -> None:
    return None


REGISTRATION: list[tuple[dict[str, Any], Any, str]] = [
    ({"spec": "61 * * * *"}, noop, "schedule 'noop': cron spec '61 * * * *': 61 is out of range"),
    ({"spec": "0 3 * * *", "tz": "Mars/Olympus"}, noop, "unknown time zone 'Mars/Olympus'"),
    ({"spec": "0 3 * * *", "misfire": "later"}, noop, "misfire must be 'once', 'skip' or 'all'"),
    ({"spec": "0 3 * * *", "misfire_grace": -1}, noop, "misfire_grace must not be negative"),
    ({"spec": "0 3 * * *"}, two_args, "a schedule function takes one argument, the tick"),
    ({"spec": "0 3 * * *"}, no_args, "a schedule function takes one argument"),
    ({"spec": "0 3 * * *", "name": "bad name"}, noop, "invalid schedule name 'bad name'"),
]


@pytest.mark.parametrize(("options", "fn", "problem"), REGISTRATION)
def test_registration_mistakes(options: dict[str, Any], fn: Any, problem: str) -> None:
    router = Router()
    spec = options.pop("spec")
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        router.schedule(spec, **options)(fn)
    assert router.schedules == []


def test_non_finite_durations_and_defaulted_parameters() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="finite"):
        router.schedule("0 3 * * *", name="a", jitter=float("nan"))(noop)
    with pytest.raises(ConfigurationError, match="finite"):
        router.schedule("0 3 * * *", name="b", misfire_grace=float("inf"))(noop)

    def with_default(tick: datetime, region: str = "eu") -> None:
        return None

    router.schedule("0 3 * * *", name="c")(with_default)  # extra parameters with defaults
    assert [s.name for s in router.schedules] == ["c"]


def test_duplicate_schedule_names_fail() -> None:
    router = Router()
    router.schedule("0 3 * * *", name="nightly")(noop)
    with pytest.raises(ConfigurationError, match="schedule 'nightly' is declared twice"):
        router.schedule("0 4 * * *", name="nightly")(noop)
    with pytest.raises(ConfigurationError, match="not an Event with a stream"):
        router.schedule_event("0 3 * * *", "hello", name="x")  # type: ignore[arg-type]


def test_declarative_form() -> None:
    router = Router()
    router.schedule_event("0 9 * * MON", Reminder(text="standup"), name="standup")
    [spec] = router.schedules
    assert spec.name == "standup" and spec.spec == "0 9 * * MON"
    assert spec.fn(datetime.now(UTC)) == Reminder(text="standup")


def local(ticks: list[datetime], tz: str) -> list[str]:
    return [t.astimezone(zone(tz)).strftime("%m-%d %H:%M %Z") for t in ticks]


def between(spec: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    return ticks_between(validate_cron(spec), zone(tz), start, end, limit=1000)


@pytest.mark.parametrize(
    ("tz", "day_before", "gap_end"),
    [
        ("Europe/Berlin", "03-28 02:30 CET", "03-29 03:00 CEST"),  # 2026-03-29 02:00 -> 03:00
        ("America/New_York", "03-07 02:30 EST", "03-08 03:00 EDT"),  # 2026-03-08 02:00 -> 03:00
    ],
)
def test_spring_forward_gap_fires_at_the_end_of_the_gap(
    tz: str, day_before: str, gap_end: str
) -> None:
    ticks = between("30 2 * * *", tz, datetime(2026, 3, 5, tzinfo=UTC),
                    datetime(2026, 4, 1, tzinfo=UTC))  # fmt: skip
    labels = local(ticks, tz)
    assert day_before in labels and gap_end in labels  # not lost...
    assert len(labels) == len(set(labels)) == len(ticks) == 27  # ...and one a day


def test_ticks_inside_the_gap_collapse_into_one() -> None:
    # Berlin 2026-03-29: 02:00, 02:15, 02:30, 02:45 do not exist; 03:00 is the gap's end
    ticks = between("*/15 * * * *", "Europe/Berlin", datetime(2026, 3, 29, 0, 40, tzinfo=UTC),
                    datetime(2026, 3, 29, 1, 20, tzinfo=UTC))  # fmt: skip
    assert local(ticks, "Europe/Berlin") == [
        "03-29 01:45 CET", "03-29 03:00 CEST", "03-29 03:15 CEST",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("tz", "day"),
    [("Europe/Berlin", "10-25"), ("America/New_York", "11-01")],  # 2026 fall-back days
)
def test_fall_back_overlap_fires_once_at_the_first_occurrence(tz: str, day: str) -> None:
    spec = "30 2 * * *" if tz == "Europe/Berlin" else "30 1 * * *"
    ticks = between(spec, tz, datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))
    on_day = [t for t in local(ticks, tz) if t.startswith(day)]
    assert len(on_day) == 1  # not doubled
    first_offset = "CEST" if tz == "Europe/Berlin" else "EDT"
    assert on_day[0].endswith(first_offset)  # the first occurrence (summer time)
    assert len(ticks) == 16  # one a day, none lost


def test_hourly_across_both_changes_is_strictly_increasing() -> None:
    ticks = between("0 * * * *", "Europe/Berlin", datetime(2026, 3, 28, tzinfo=UTC),
                    datetime(2026, 10, 27, tzinfo=UTC))  # fmt: skip
    assert all(a < b for a, b in itertools.pairwise(ticks))
    labels = local(ticks, "Europe/Berlin")
    assert len(labels) == len(set(labels))


def test_zones_and_seconds() -> None:
    ticks = between("*/20 * * * * *", "UTC", datetime(2026, 1, 1, tzinfo=UTC),
                    datetime(2026, 1, 1, 0, 1, tzinfo=UTC))  # fmt: skip
    assert [t.second for t in ticks] == [20, 40, 0]
    with pytest.raises(ConfigurationError, match="unknown time zone"):
        zone("Nowhere/Land")
