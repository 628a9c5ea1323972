"""Consumer-side idempotency, both forms.

python docs/examples/idempotency.py     # embedded Redis in ./.eventbus
"""

from __future__ import annotations

import asyncio
import os

from eventbus import Context, Event, EventBus, Router
from eventbus.status import stream_info
from eventbus.testing import running_worker, wait_for


class PaymentCaptured(Event, stream="payments"):
    payment_id: str
    account: str
    amount_cents: int


router = Router()
receipts_sent: list[str] = []


# Key-based: the handler runs once per idempotency key (the publisher's key, else the
# stream id) within the TTL. Its own side effects happen at least once per *run*, so a
# crash between the side effect and the commit can repeat it: dedupe it downstream with
# ctx.idempotency_key (e.g. INSERT ... ON CONFLICT (idempotency_key) DO NOTHING).
@router.subscribe(idempotent=True)
async def send_receipt(event: PaymentCaptured, ctx: Context) -> None:
    receipts_sent.append(f"{ctx.idempotency_key}: receipt for {event.payment_id}")


# Transactional: Redis writes queued on ctx.transaction() are applied in one MULTI/EXEC
# with the idempotency marker and the XACK, after the handler returns: exactly once.
@router.subscribe(idempotent=True)
async def update_balance(event: PaymentCaptured, ctx: Context) -> None:
    balance = await ctx.bus.redis.hget(ctx.slot_key("balances"), event.account)  # reads: now
    tx = ctx.transaction()  # writes: queued, applied with the ack
    tx.hincrby(ctx.slot_key("balances"), event.account, event.amount_cents)
    tx.rpush(ctx.slot_key(f"ledger:{event.account}"), f"{balance} + {event.amount_cents}")


async def main(url: str | None = None, prefix: str = "idempotency") -> dict[str, object]:
    bus = EventBus.from_url(url, service="billing", prefix=prefix)
    async with bus, running_worker(bus, router):
        payment = PaymentCaptured(payment_id="p-1", account="acme", amount_cents=500)
        # the same payment delivered three times (e.g. a producer without dedup)
        for _ in range(3):
            await bus.publish(payment, key="p-1", dedup_window=0)
        await wait_for(lambda: all_settled(bus), message="every delivery settled")
        balance = int(await bus.redis.hget(bus.keys.stream("payments") + ":app:balances", "acme"))
    return {"balance": balance, "receipts": list(receipts_sent)}


async def all_settled(bus: EventBus) -> bool:
    """Both groups have read all three entries and acknowledged them (by position, not
    lag: Redis 6.2 reports no lag)."""
    info = await stream_info(bus.redis, bus.keys, "payments")
    return len(info.groups) == 2 and all(
        g.last_delivered_id == info.last_id and g.pending == 0 for g in info.groups
    )


if __name__ == "__main__":
    print(asyncio.run(main(os.environ.get("EVENTBUS_REDIS_URL"))))
