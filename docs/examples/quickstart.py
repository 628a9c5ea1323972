"""Quickstart: declare events, subscribe handlers, publish, run a worker.

python docs/examples/quickstart.py            # embedded Redis in ./.eventbus
EVENTBUS_REDIS_URL=redis://localhost:6379/0 python docs/examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os

from eventbus import Context, Event, EventBus, Router
from eventbus.testing import running_worker, wait_for


class OrderPlaced(Event, stream="orders"):
    order_id: str
    total_cents: int


class OrderCancelled(Event, stream="orders"):
    order_id: str
    reason: str = ""


router = Router()
emails: list[str] = []
ledger: dict[str, int] = {}


@router.subscribe(max_attempts=5, concurrency=8)
async def send_confirmation(event: OrderPlaced, ctx: Context) -> None:
    """Its own consumer group: a slow mail server never delays the ledger."""
    emails.append(f"order {event.order_id} confirmed (attempt {ctx.attempt})")


@router.subscribe
async def update_ledger(event: OrderPlaced | OrderCancelled) -> None:
    """A union annotation subscribes to both types."""
    if isinstance(event, OrderPlaced):
        ledger[event.order_id] = event.total_cents
    else:
        ledger.pop(event.order_id, None)


async def main(url: str | None = None, prefix: str = "quickstart") -> None:
    bus = EventBus.from_url(url, service="shop", prefix=prefix)  # url None: embedded
    async with bus, running_worker(bus, router):
        await bus.publish(OrderPlaced(order_id="o-1", total_cents=4200), key="o-1")
        await bus.publish(OrderPlaced(order_id="o-2", total_cents=990))
        await bus.publish(OrderCancelled(order_id="o-2", reason="changed mind"))
        await wait_for(lambda: len(emails) == 2 and ledger == {"o-1": 4200})
    print(emails, ledger)


if __name__ == "__main__":
    asyncio.run(main(os.environ.get("EVENTBUS_REDIS_URL")))
