"""The time a component sees: `Clock`, and the real one, `SystemClock`.

A component that waits for wall-clock moments (the scheduler waits for cron ticks) asks
its clock for the time and sleeps through it, so a test can hand it a clock it moves by
hand (`eventbus.testing.clock.FakeClock`) instead of waiting for real ticks. Times
measured by Redis (key TTLs) are not the clock's: they always pass in real time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol

from eventbus.waiting import wait_for_event


class Clock(Protocol):
    """Where a component reads the time and sleeps."""

    def now(self) -> datetime:
        """The current time: an aware datetime in UTC."""
        ...

    async def sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep `seconds` of this clock's time, or until `stop` is set; True when `stop`
        was set (the stop-aware sleep of a loop: ``if await clock.sleep(s, stop): return``)."""
        ...


class SystemClock:
    """The real clock: the system's wall time, and real sleeps."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        return await wait_for_event(stop, max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
