"""An app exercising what ``eventbus asyncapi`` and ``eventbus check`` describe: nested
and optional payload fields, a custom type name, a handler on two streams, a group
override, handler options, a fixed-event schedule, an annotated and an unannotated
schedule, and setups ``check`` warns about (a declared type no handler takes, misfire="all"
with a short grace, jitter as long as the interval). Nothing here runs against Redis.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from eventbus import Event, Router


class Currency(enum.Enum):
    EUR = "EUR"
    USD = "USD"


class Line(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    price: float


class OrderPlaced(Event, stream="shop-orders", type="shop.order.placed.v1"):
    """A customer placed an order."""

    order_id: str
    lines: list[Line]
    currency: Currency
    note: str | None = None


class OrderCancelled(Event, stream="shop-orders"):
    order_id: str
    reason: str = ""


class OrderAudited(Event, stream="shop-orders"):
    """Declared for shop-orders, but no handler here takes it (check warns)."""

    order_id: str


class PaymentCaptured(Event, stream="shop-payments"):
    order_id: str
    amount: float
    captured_at: datetime


class ReportRequested(Event, stream="shop-reports"):
    kind: str


class Heartbeat(Event, stream="shop-heartbeats"):
    service: str


router = Router()


@router.subscribe(
    name="fulfilment", concurrency=4, max_attempts=8, lease=60, timeout=20, idempotent=True
)
async def fulfil(event: OrderPlaced | OrderCancelled | PaymentCaptured) -> None:
    """Ships paid orders.

    (Second paragraph: not part of the description.)"""


@router.subscribe(name="ledger", group="finance.ledger")
def book(event: PaymentCaptured) -> None:
    return None


@router.subscribe(name="reports", concurrency=1)
async def report(event: ReportRequested) -> None:
    return None


router.schedule_event("*/5 * * * *", Heartbeat(service="shop"), name="shop-heartbeat")


@router.schedule("0 6 * * MON-FRI", name="daily-report", tz="Europe/Berlin", misfire="all")
def daily_report(tick: datetime) -> ReportRequested | None:
    """Asks for the sales report on weekday mornings."""
    return ReportRequested(kind="sales")


@router.schedule("*/10 * * * * *", name="restock", jitter=15)
def restock(tick):  # type: ignore[no-untyped-def]
    return None
