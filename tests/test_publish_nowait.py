"""Fire-and-forget publishing: returns at once, retries through outages until each
event's deadline, counts what it drops, flushes on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from eventbus import BufferFull, Context, Event, EventBus, PublishSettings, Router
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job


class FollowUp(Event, stream="followups"):
    n: int


def nowait_bus(url: str, prefix: str, **settings: object) -> EventBus:
    return EventBus.from_url(
        url,
        service="nowait",
        prefix=prefix,
        publishing=PublishSettings(**settings),  # type: ignore[arg-type]
    )


async def xlen(bus: EventBus, stream: str = "jobs") -> int:
    return int(await bus.redis.xlen(bus.keys.stream(stream)))


async def test_publish_nowait_returns_at_once_and_flush_writes_all(bus: EventBus) -> None:
    started = time.perf_counter()
    for i in range(2000):
        assert bus.publish_nowait(Job(n=i)) is True
    assert time.perf_counter() - started < 1.0  # no round trip per call (a sanity bound)
    assert bus.buffered > 0
    assert await bus.flush(timeout=30)
    assert bus.buffered == 0
    assert await xlen(bus) == 2000
    entries = await bus.redis.xrange(bus.keys.stream("jobs"), count=3)
    assert [f[b"data"] for _, f in entries] == [b'{"n":0,"payload":""}', b'{"n":1,"payload":""}',
                                               b'{"n":2,"payload":""}']  # fmt: skip
    assert bus.publish_stats.published == 2000 and bus.publish_stats.dropped == 0


async def test_events_published_during_a_short_outage_all_arrive(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(appendonly=True)
    bus = nowait_bus(server.url, "outage")  # the default deadline, 5 s
    try:
        await bus.publish(Job(n=-1))  # connected before the outage
        server.stop()
        outage = time.monotonic()
        for i in range(300):
            assert bus.publish_nowait(Job(n=i))  # never raises for Redis trouble
        await asyncio.sleep(2)  # the outage itself (the scenario, not a wait for a result)
        server.start()
        assert await bus.flush(timeout=20)
        assert time.monotonic() - outage < 10
        assert await xlen(bus) == 301
        assert bus.publish_stats.dropped == 0 and bus.publish_stats.retried > 0
        # batches that failed were retried, not lost: they count as written, not errors
        outcomes = bus.publish_stats.by_outcome
        assert outcomes["jobs", "Job", "ok"] == 301 and outcomes["jobs", "Job", "error"] == 0
    finally:
        await bus.aclose()


async def test_events_past_their_deadline_are_dropped_counted_and_reported(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(appendonly=True)
    dropped: list[tuple[Event, str]] = []
    bus = nowait_bus(
        server.url, "deadline", deadline=1.0, on_drop=lambda e, why: dropped.append((e, why))
    )
    try:
        await bus.publish(Job(n=-1))
        server.stop()
        for i in range(50):
            bus.publish_nowait(Job(n=i))
        started = time.monotonic()
        assert await bus.flush(timeout=15)  # nothing hangs: every event is settled
        assert time.monotonic() - started < 5
        assert bus.publish_stats.dropped == 50
        assert [e.n for e, _ in dropped] == list(range(50))  # type: ignore[attr-defined]
        assert all("deadline" in why for _, why in dropped)
        server.start()
        bus.publish_nowait(Job(n=99))  # and the bus still works afterwards
        assert await bus.flush(timeout=10)
        assert await xlen(bus) == 2
    finally:
        await bus.aclose()


async def test_overflow_drop_counts_what_did_not_fit(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(appendonly=True)
    dropped: list[str] = []
    bus = nowait_bus(
        server.url, "full", buffer_size=10, deadline=30, on_drop=lambda e, why: dropped.append(why)
    )
    try:
        await bus.publish(Job(n=-1))
        server.stop()  # nothing drains
        accepted = [bus.publish_nowait(Job(n=i)) for i in range(15)]
        assert accepted.count(True) == 10 and accepted[10:] == [False] * 5
        assert bus.publish_stats.dropped == 5 and dropped == ["buffer full"] * 5
        server.start()
        assert await bus.flush(timeout=20)
        assert await xlen(bus) == 11
    finally:
        await bus.aclose()


async def test_overflow_raise_and_block(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(appendonly=True)
    raising = nowait_bus(server.url, "raise", buffer_size=5, overflow="raise", deadline=30)
    blocking = nowait_bus(server.url, "block", buffer_size=5, overflow="block", deadline=30)
    try:
        await raising.publish(Job(n=-1))
        await blocking.publish(Job(n=-1))
        server.stop()
        for i in range(5):
            raising.publish_nowait(Job(n=i))
            blocking.publish_nowait(Job(n=i))
        with pytest.raises(BufferFull, match="raise buffer_size"):
            raising.publish_nowait(Job(n=5))
        # on the event loop's thread, "block" cannot wait without stalling the loop
        with pytest.raises(BufferFull, match="would stall the event loop"):
            blocking.publish_nowait(Job(n=5))
        # another thread can wait: it returns once the flusher has made room
        waiter = asyncio.ensure_future(asyncio.to_thread(blocking.publish_nowait, Job(n=6)))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        server.start()
        assert await asyncio.wait_for(waiter, timeout=20) is True
        assert await blocking.flush(timeout=20) and await raising.flush(timeout=20)
        assert await xlen(blocking) == 7 and await xlen(raising) == 6
    finally:
        await raising.aclose()
        await blocking.aclose()


async def test_aclose_flushes_first(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    async with nowait_bus(eventbus_redis_url, eventbus_prefix) as bus:
        for i in range(500):
            bus.publish_nowait(Job(n=i), key=f"k{i % 250}")  # keyed: deduped in the buffer too
        stats = bus.publish_stats
    check = nowait_bus(eventbus_redis_url, eventbus_prefix)
    try:
        assert await xlen(check) == 250
        assert stats.published == 250 and stats.duplicates == 250
    finally:
        await check.aclose()


async def test_worker_shutdown_flushes_what_handlers_published(bus: EventBus) -> None:
    router = Router()

    @router.subscribe(name="forwarder")
    async def forward(event: Job, ctx: Context) -> None:
        ctx.bus.publish_nowait(FollowUp(n=event.n))

    async with running_worker(bus, router) as worker:
        await bus.publish_many([Job(n=i) for i in range(100)])
        await wait_for(lambda: worker.consumers[0].stats.ok == 100)
    assert bus.buffered == 0
    assert await xlen(bus, "followups") == 100


async def test_publish_nowait_from_other_threads(bus: EventBus) -> None:
    """Thread-safe: a put from another thread wakes the flusher on the bus's loop, and a
    flush right after it sees the event (the wake-up may not have run yet)."""
    for i in range(20):
        assert await asyncio.to_thread(bus.publish_nowait, Job(n=i))
        assert await bus.flush(timeout=10)
        assert await xlen(bus) == i + 1


def test_a_bus_built_outside_a_loop_buffers_until_the_loop_uses_it(
    eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    bus = EventBus.from_url(eventbus_redis_url, service="pre", prefix=eventbus_prefix)
    assert bus.publish_nowait(Job(n=1))  # no loop anywhere yet: buffered, no error
    assert bus.buffered == 1

    async def later() -> int:
        await bus.aclose()  # flushes on the loop
        return bus.publish_stats.published

    assert asyncio.run(later()) == 1


def test_a_bus_built_outside_a_loop_starts_writing_at_its_first_publish(
    eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    bus = EventBus.from_url(eventbus_redis_url, service="pre", prefix=eventbus_prefix)
    assert bus.publish_nowait(Job(n=1))  # no loop yet: buffered

    async def later() -> None:
        try:
            await bus.publish(Job(n=2))  # first use on the loop: the buffer is written too
            await wait_for(lambda: bus.buffered == 0 and bus.publish_stats.published == 2)
        finally:
            await bus.aclose()

    asyncio.run(later())


async def test_closing_with_events_it_cannot_write_drops_them_counted(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    dropped: list[str] = []
    bus = nowait_bus(
        server.url, "closing", deadline=0.5, on_drop=lambda e, why: dropped.append(why)
    )
    await bus.publish(Job(n=-1))
    server.stop()
    for i in range(10):
        bus.publish_nowait(Job(n=i))
    await asyncio.wait_for(bus.aclose(), timeout=15)
    assert bus.publish_stats.dropped == 10 == len(dropped)
    assert bus.buffered == 0


async def test_a_burst_that_fits_in_memory_is_never_dropped(bus: EventBus) -> None:
    # the buffer is bounded by bytes (32 MiB by default), not by a count of 10,000
    for i in range(20_000):
        assert bus.publish_nowait(Job(n=i)) is True
    assert await bus.flush(timeout=30)
    assert await xlen(bus) == 20_000
    assert bus.publish_stats.dropped == 0 and bus.buffered_bytes == 0


async def test_the_buffer_is_bounded_by_bytes_when_redis_is_down(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(appendonly=True)
    bound = 50_000
    bus = nowait_bus(server.url, "bytes", buffer_bytes=bound, deadline=30)
    try:
        await bus.publish(Job(n=-1))
        server.stop()  # nothing drains
        accepted = 0
        for i in range(200):
            accepted += bus.publish_nowait(Job(n=i, payload="x" * 1000))
            assert bus.buffered_bytes <= bound
        entry = bus.buffered_bytes // accepted
        assert 1000 < entry < 1300  # the packed XADD: payload plus envelope
        assert accepted == bound // entry  # filled to the bound, not past it
        assert bus.publish_stats.dropped == 200 - accepted
        assert bus.publish_stats.dropped_by_stream["jobs"] == 200 - accepted
        raising = nowait_bus(
            server.url, "bytes", buffer_bytes=3_000, overflow="raise", deadline=0.5
        )
        try:
            raising.publish_nowait(Job(n=0, payload="x" * 4000))  # alone: always admitted
            with pytest.raises(BufferFull, match=r"needs 1,\d{3} more of buffer_bytes=3,000"):
                raising.publish_nowait(Job(n=1, payload="x" * 1000))
            assert raising.buffered == 1
        finally:
            await raising.aclose()  # drops it at its deadline
        server.start()
        assert await bus.flush(timeout=20)
        assert await xlen(bus) == accepted + 1
    finally:
        await bus.aclose()
