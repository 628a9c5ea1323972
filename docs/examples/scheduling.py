"""Cron schedules that emit events: a function per tick, and a fixed event.

python docs/examples/scheduling.py     # embedded Redis; runs for ~3 seconds
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime

from eventbus import Event, EventBus, Router
from eventbus.schedules.scheduler import Scheduler
from eventbus.testing import wait_for


class InvoicesDue(Event, stream="billing"):
    run_date: str


class Heartbeat(Event, stream="heartbeats"):
    service: str


router = Router()


# Every weekday at 06:00 in Berlin (DST handled); if the schedulers were all down at
# 06:00, the latest missed run still fires within 2 hours (misfire="once").
@router.schedule("0 6 * * MON-FRI", name="invoices-due", tz="Europe/Berlin",
                 misfire="once", misfire_grace=7200)  # fmt: skip
def invoices_due(tick: datetime) -> InvoicesDue:
    return InvoicesDue(run_date=tick.date().isoformat())


# The declarative form: the same event every second (6 fields: seconds first).
router.schedule_event("* * * * * *", Heartbeat(service="billing"), name="billing-heartbeat")


async def main(url: str | None = None, prefix: str = "scheduling") -> int:
    bus = EventBus.from_url(url, service="billing", prefix=prefix)
    # two replicas, as two processes would be: each tick is still emitted once
    async with bus, Scheduler(bus, router.schedules), Scheduler(bus, router.schedules):
        await wait_for(lambda: heartbeats(bus, 3), message="three heartbeats")
        return int(await bus.redis.xlen(bus.keys.stream("heartbeats")))


async def heartbeats(bus: EventBus, at_least: int) -> bool:
    return int(await bus.redis.xlen(bus.keys.stream("heartbeats"))) >= at_least


if __name__ == "__main__":
    print(asyncio.run(main(os.environ.get("EVENTBUS_REDIS_URL"))), "heartbeats")
