"""The clocks: the system's, and the fake one tests move by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from eventbus.clock import SYSTEM_CLOCK, Clock
from eventbus.errors import ConfigurationError
from eventbus.testing.clock import FakeClock

START = datetime(2030, 1, 1, tzinfo=UTC)


async def test_the_system_clock_is_aware_utc_and_its_sleep_stops_early() -> None:
    clock: Clock = SYSTEM_CLOCK
    assert clock.now().tzinfo is UTC
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)
    stop = asyncio.Event()
    assert await clock.sleep(0.01, stop) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(clock.sleep(60, stop), 5) is True


async def test_advance_wakes_each_sleeper_at_its_deadline_in_order() -> None:
    clock = FakeClock(START)
    stop = asyncio.Event()
    seen: list[tuple[str, float]] = []

    async def every(name: str, period: float) -> None:
        while not await clock.sleep(period, stop):
            seen.append((name, (clock.now() - START).total_seconds()))

    tasks = [asyncio.create_task(every("a", 2)), asyncio.create_task(every("b", 3))]
    await clock.sleeping(2)
    await clock.advance(timedelta(seconds=6.5))
    assert clock.now() == START + timedelta(seconds=6.5)
    times = [t for _, t in seen]
    assert times == sorted(times)  # in the order of their deadlines
    assert sorted(seen, key=lambda s: (s[1], s[0])) == [
        ("a", 2),
        ("b", 3),
        ("a", 4),
        ("a", 6),
        ("b", 6),
    ]
    stop.set()
    await asyncio.gather(*tasks)


async def test_a_stop_ends_a_fake_sleep_and_time_stands_still_otherwise() -> None:
    clock = FakeClock(START)
    stop = asyncio.Event()
    sleeping = asyncio.create_task(clock.sleep(10, stop))
    await clock.sleeping(1)
    await asyncio.sleep(0.05)
    assert not sleeping.done() and clock.now() == START
    stop.set()
    assert await sleeping is True
    assert await clock.sleep(10, stop) is True  # already stopped: no sleep


async def test_a_sleeper_that_never_sleeps_again_times_advance_out() -> None:
    clock = FakeClock(START, settle_timeout=0.1)
    stop, forever = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        await clock.sleep(1, stop)
        await forever.wait()  # blocks on something that is not the clock

    task = asyncio.create_task(stuck())
    await clock.sleeping(1)
    with pytest.raises(TimeoutError, match="sleep again"):
        await clock.advance(2)
    task.cancel()


def test_fake_clock_mistakes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        FakeClock(datetime(2030, 1, 1))
    clock = FakeClock(datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert clock.now() == START and clock.now().tzinfo is UTC
    with pytest.raises(ConfigurationError, match="does not go back"):
        asyncio.run(clock.advance_to(START - timedelta(seconds=1)))
    with pytest.raises(ConfigurationError, match="advance: by must not be negative"):
        asyncio.run(clock.advance(-1))
