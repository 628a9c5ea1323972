"""The app the chaos soak's workers run: ``eventbus run benchmarks.soak_app``.

Three handlers on one stream, each its own group (service ``soak``):

- ``plain``: counts each event it handles, ``HINCRBY <prefix>:plain <n> 1``: at least
  once, so a count above 1 is an ordinary redelivery;
- ``exactly-once``: idempotent and transactional: ``HINCRBY <prefix>:{soak}:app:effects
  <n> 1`` queued on ``ctx.transaction()``, the effect that must be there exactly once;
  its runs are counted apart (``<prefix>:runs``), best effort;
- ``flaky``: raises on some attempts, decided by the event's number and the attempt
  (about one attempt in five, never past attempt 3), so ``max_attempts`` is never
  reached by design; its successes go to ``<prefix>:flaky``.

Every handler start is appended to ``<prefix>:starts`` as ``group stream_id consumer
attempt unix_time`` (best effort: a start while Redis is down is not recorded), which
is how the soak tells a real takeover from a spurious "claimed by another consumer".

Environment: ``SOAK_CONSUMER`` (the worker's --consumer, for the start records),
``SOAK_LEASE`` (seconds, default 2), ``SOAK_SLOW_EVERY`` (one event in this many takes
0.5-1.5 s in ``exactly-once``; default 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time

from redis.exceptions import RedisError

from eventbus import Context, Event, Router


class SoakEvent(Event, stream="soak"):
    n: int
    pad: str = ""


STREAM = "soak"
SERVICE = "soak"
MAX_ATTEMPTS = 25
FLAKY_LAST_FAILING_ATTEMPT = 3

CONSUMER = os.environ.get("SOAK_CONSUMER", f"pid{os.getpid()}")
LEASE = float(os.environ.get("SOAK_LEASE", "2"))
SLOW_EVERY = int(os.environ.get("SOAK_SLOW_EVERY", "20"))

router = Router()
CONCURRENCY = 8
BACKOFF = 0.2  # seconds before a first retry (doubling, capped at the lease)


def flaky_fails(n: int, attempt: int) -> bool:
    """Whether the flaky handler fails attempt `attempt` of event `n`: about one in
    five, deterministic, and never after attempt 3."""
    if attempt > FLAKY_LAST_FAILING_ATTEMPT:
        return False
    digest = hashlib.blake2b(f"{n}:{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest) % 5 == 0


async def _record_start(ctx: Context) -> None:
    record = f"{ctx.group} {ctx.stream_id} {CONSUMER} {ctx.attempt} {time.time():.3f}"
    with contextlib.suppress(RedisError, OSError):  # best effort: outcomes are what counts
        await ctx.bus.redis.rpush(f"{ctx.bus.keys.prefix}:starts", record)


async def _work(slow: bool = False) -> None:
    await asyncio.sleep(random.uniform(0.5, 1.5) if slow else random.uniform(0.0, 0.03))


@router.subscribe(
    name="plain",
    concurrency=CONCURRENCY,
    lease=LEASE,
    max_attempts=MAX_ATTEMPTS,
    backoff=BACKOFF,
    start_from="beginning",
)
async def plain(event: SoakEvent, ctx: Context) -> None:
    await _record_start(ctx)
    await _work()
    await ctx.bus.redis.hincrby(f"{ctx.bus.keys.prefix}:plain", str(event.n), 1)


@router.subscribe(
    name="exactly-once",
    idempotent=True,
    concurrency=CONCURRENCY,
    lease=LEASE,
    max_attempts=MAX_ATTEMPTS,
    backoff=BACKOFF,
    start_from="beginning",
)
async def exactly_once(event: SoakEvent, ctx: Context) -> None:
    await _record_start(ctx)
    with contextlib.suppress(RedisError, OSError):  # informative; the effect is the point
        await ctx.bus.redis.hincrby(f"{ctx.bus.keys.prefix}:runs", str(event.n), 1)
    ctx.transaction().hincrby(ctx.slot_key("effects"), str(event.n), 1)
    await _work(slow=SLOW_EVERY > 0 and event.n % SLOW_EVERY == 0)


class FlakyError(Exception):
    """The flaky handler's designed failure."""


@router.subscribe(
    name="flaky",
    concurrency=CONCURRENCY,
    lease=LEASE,
    max_attempts=MAX_ATTEMPTS,
    backoff=BACKOFF,
    start_from="beginning",
)
async def flaky(event: SoakEvent, ctx: Context) -> None:
    await _record_start(ctx)
    await _work()
    if flaky_fails(event.n, ctx.attempt):
        raise FlakyError(f"designed failure of event {event.n} on attempt {ctx.attempt}")
    await ctx.bus.redis.hincrby(f"{ctx.bus.keys.prefix}:flaky", str(event.n), 1)
