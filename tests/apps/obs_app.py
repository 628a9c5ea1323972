"""A worker app for the observability tests: every outcome the dashboard shows.

``eventbus run tests.apps.obs_app --metrics-port PORT``: handlers that succeed, fail
then succeed, always fail (dead letters), dedupe (idempotent), forward with
publish_nowait; and a schedule every second.
"""

from __future__ import annotations

from datetime import datetime

from eventbus import Context, Event, Router

router = Router()


class Order(Event, stream="orders"):
    n: int
    poison: bool = False


class Receipt(Event, stream="receipts"):
    n: int


class Tick(Event, stream="ticks"):
    at: str


@router.subscribe(name="accept", concurrency=8)
async def accept(event: Order, ctx: Context) -> None:
    ctx.bus.publish_nowait(Receipt(n=event.n))


@router.subscribe(name="flaky", backoff=0.1, max_attempts=3)
async def flaky(event: Order, ctx: Context) -> None:
    if event.n % 5 == 0 and ctx.attempt == 1:
        raise ConnectionError("transient")


@router.subscribe(name="strict", backoff=0.1, max_attempts=2)
async def strict(event: Order) -> None:
    if event.poison:
        raise ValueError("poison order")


@router.subscribe(name="once", idempotent=True)
async def once(event: Order) -> None:
    return None


@router.subscribe(name="receipts")
async def receipts(event: Receipt) -> None:
    return None


@router.subscribe(name="ticks")
async def ticks(event: Tick) -> None:
    return None


@router.schedule("* * * * * *", name="heartbeat")
def heartbeat(tick: datetime) -> Tick:
    return Tick(at=tick.isoformat())
