"""Publishing three ways, with per-stream settings, from async and from sync code.

python docs/examples/publishing.py     # embedded Redis in ./.eventbus
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from eventbus import Event, EventBus, PublishSettings, Stream, SyncPublisher

# Settings travel with the stream's declaration: every process importing these events
# (publishers and workers) applies the same cap, retention and dedup window.
checkouts = Stream("checkouts", maxlen=1_000_000, retention=timedelta(days=7))
clicks = Stream("clicks", maxlen=100_000, dedup_window=0)


class CheckoutCompleted(Event, stream=checkouts):
    order_id: str
    total_cents: int


class LinkClicked(Event, stream=clicks):
    url: str


async def main(url: str | None = None, prefix: str = "publishing") -> dict[str, object]:
    dropped: list[str] = []
    settings = PublishSettings(
        buffer_bytes=32 * 1024 * 1024,  # the default: 32 MiB of encoded events
        deadline=5.0,
        on_drop=lambda event, why: dropped.append(f"{type(event).__name__}: {why}"),
    )
    async with EventBus.from_url(url, service="shop", prefix=prefix, publishing=settings) as bus:
        # 1. publish: awaited, returns the stream id; with a key, once per key per window
        first = await bus.publish(CheckoutCompleted(order_id="o-1", total_cents=4200), key="o-1")
        retry = await bus.publish(CheckoutCompleted(order_id="o-1", total_cents=4200), key="o-1")
        assert retry == first and retry.duplicate  # the client retried: no second event

        # 2. publish_many: one round trip for a batch, ids in order
        ids = await bus.publish_many(
            [CheckoutCompleted(order_id=f"o-{i}", total_cents=100 * i) for i in range(2, 12)]
        )

        # 3. publish_nowait: returns at once; a background task writes, retrying until
        #    each event's deadline; aclose() (the `async with`) flushes what is left
        for i in range(1000):
            bus.publish_nowait(LinkClicked(url=f"/products/{i % 50}"))
        await bus.flush()
        stats = bus.publish_stats

    # From synchronous code (Flask, Django, scripts): the same envelope and dedup
    with SyncPublisher.from_url(url, service="backoffice", prefix=prefix) as publisher:
        again = publisher.publish(CheckoutCompleted(order_id="o-1", total_cents=4200), key="o-1")
        publisher.publish_nowait(LinkClicked(url="/admin"))
    assert again.duplicate

    return {"first": first, "batch": len(ids), "stats": stats, "dropped": dropped}


if __name__ == "__main__":
    print(asyncio.run(main(os.environ.get("EVENTBUS_REDIS_URL"))))
