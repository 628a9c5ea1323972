"""Metrics in your own service: eventbus's collector in the registry you already serve.

python docs/examples/observability.py     # embedded Redis in ./.eventbus

A service that already exposes /metrics (a web app with prometheus_client, say) installs
eventbus's collector into that registry; `eventbus run --metrics-port` does the same for
the process it runs.
"""

from __future__ import annotations

import asyncio
import os

from prometheus_client import CollectorRegistry, generate_latest

from eventbus import Event, EventBus, Router
from eventbus.metrics import install
from eventbus.testing import running_worker, wait_for


class InvoicePaid(Event, stream="invoices"):
    invoice_id: str
    amount_cents: int


router = Router()
receipts_sent: list[str] = []


@router.subscribe(name="receipts", max_attempts=1)
async def send_receipt(event: InvoicePaid) -> None:
    if event.amount_cents < 0:
        raise ValueError(f"negative amount on {event.invoice_id}")  # dead-lettered
    receipts_sent.append(event.invoice_id)


async def main(url: str | None = None, prefix: str = "observability") -> str:
    registry = CollectorRegistry()  # in a real service: the registry your /metrics serves
    bus = EventBus.from_url(url, service="billing", prefix=prefix)

    async def settled() -> bool:
        return len(receipts_sent) == 3 and await bus.redis.xlen(bus.keys.dlq("invoices")) == 1

    async with bus, running_worker(bus, router) as worker:
        install(bus, worker=worker, registry=registry)
        for n in range(3):
            await bus.publish(InvoicePaid(invoice_id=f"i-{n}", amount_cents=100 * n))
        await bus.publish(InvoicePaid(invoice_id="i-bad", amount_cents=-1))
        await wait_for(settled)
        return generate_latest(registry).decode()  # what Prometheus would scrape


if __name__ == "__main__":
    text = asyncio.run(main(os.environ.get("EVENTBUS_REDIS_URL")))
    print("\n".join(line for line in text.splitlines() if line.startswith("eventbus_")))
