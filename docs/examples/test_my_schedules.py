"""Testing your own schedules on a fake clock: the ticks come when the test says, not
when the wall clock gets there (Redis is still real, as in test_my_handlers.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from eventbus import Event, EventBus, Router
from eventbus.schedules.scheduler import Scheduler
from eventbus.testing import wait_for
from eventbus.testing.clock import FakeClock

pytestmark = pytest.mark.asyncio  # pytest-asyncio runs this module's async tests

BERLIN = ZoneInfo("Europe/Berlin")


class ReportDue(Event, stream="reports"):
    day: str


router = Router()


@router.schedule("0 6 * * MON-FRI", name="report-due", tz="Europe/Berlin")
def report_due(tick: datetime) -> ReportDue:
    return ReportDue(day=tick.date().isoformat())


async def reports(bus: EventBus) -> list[str]:
    entries = await bus.redis.xrange(bus.keys.stream("reports"))
    return [json.loads(fields[b"data"])["day"] for _, fields in entries]


async def test_the_report_is_due_at_six_in_berlin(eventbus_bus: EventBus) -> None:
    clock = FakeClock(datetime(2030, 1, 7, 5, 59, tzinfo=BERLIN))  # a Monday, 05:59
    async with Scheduler(eventbus_bus, router.schedules, clock=clock):
        await clock.sleeping(1)  # the scheduler waits for its first tick
        await clock.advance(timedelta(seconds=59))
        assert await reports(eventbus_bus) == []  # 05:59:59: not yet
        await clock.advance(timedelta(seconds=1))  # 06:00: due, on time
        await wait_for(lambda: reports(eventbus_bus), message="the report")
    assert await reports(eventbus_bus) == ["2030-01-07"]
