"""The behaviours of Watermill's universal Pub/Sub test suite, in eventbus terms."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from eventbus import Context, EventBus, PublishError, Router, WorkerSettings
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job, Ping, Pong
from tests.helpers import Seen, no_pending, pending_count

FAST = WorkerSettings(grace=5, reclaim_interval=0.2)


async def test_publish_subscribe(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe
    async def handle(event: Job, ctx: Context) -> None:
        seen.add(event, ctx)

    async with running_worker(bus, router):
        ids = [await bus.publish(Job(n=i, payload=f"p{i}")) for i in range(50)]
        await wait_for(lambda: len(seen) == 50, message="50 events")
    assert sorted(e.n for e in seen.values()) == list(range(50))
    assert {ctx.stream_id for _, ctx in seen.items} == set(ids)
    assert all(e.payload == f"p{e.n}" for e in seen.values())
    assert await pending_count(bus, "jobs", f"test.{router.handlers[0].name}") == 0


async def test_concurrent_subscribe_shares_a_group(bus: EventBus) -> None:
    """Three workers in one group: every event handled once, by one of them."""
    seen = Seen()
    router = Router()

    @router.subscribe(concurrency=4)
    async def handle(event: Job, ctx: Context) -> None:
        await asyncio.sleep(0.001)
        seen.add(event.n, ctx)

    async with (
        running_worker(bus, router, consumer="w1"),
        running_worker(bus, router, consumer="w2"),
        running_worker(bus, router, consumer="w3"),
    ):
        await asyncio.gather(*(bus.publish(Job(n=i)) for i in range(300)))
        await wait_for(lambda: len(seen) == 300, message="300 events")
    assert sorted(seen.values()) == list(range(300))


async def test_several_streams_at_once(bus: EventBus) -> None:
    got: dict[str, list[int]] = {"jobs": [], "pings": [], "pongs": []}
    router = Router()

    @router.subscribe
    async def jobs(event: Job) -> None:
        got["jobs"].append(event.n)

    @router.subscribe
    async def pings_and_pongs(event: Ping | Pong, ctx: Context) -> None:
        got[ctx.stream].append(event.n)

    async with running_worker(bus, router) as worker:
        assert {(c.stream, c.spec.name.rsplit(".", 1)[-1]) for c in worker.consumers} == {
            ("jobs", "jobs"), ("pings", "pings_and_pongs"), ("pongs", "pings_and_pongs")
        }  # fmt: skip
        for i in range(20):
            await bus.publish_many([Job(n=i), Ping(n=i), Pong(n=i)])
        await wait_for(lambda: all(len(v) == 20 for v in got.values()), message="3 x 20")
    assert all(sorted(v) == list(range(20)) for v in got.values())


async def test_resend_on_error(bus: EventBus) -> None:
    attempts: list[int] = []
    router = Router()

    @router.subscribe(backoff=0.05, lease=2)
    async def flaky(event: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")

    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.publish(Job(n=1))
        await wait_for(lambda: attempts == [1, 2, 3], message="three attempts")
        stats = worker.consumers[0].stats
        await wait_for(lambda: stats.ok == 1)
    assert stats.errors == 2 and stats.dead == 0


async def test_no_ack_crash_gets_redelivered(bus: EventBus) -> None:
    """A consumer that read an entry and died (never acked) loses it to a live one
    once the lease runs out; the delivery count says it is the second attempt."""
    seen = Seen()
    router = Router()

    @router.subscribe(lease=1, group="crashy")
    async def handle(event: Job, ctx: Context) -> None:
        seen.add(event.n, ctx)

    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "crashy", id="0", mkstream=True)
    await bus.publish(Job(n=42))
    # a consumer that reads and then crashes before acking
    read = await bus.redis.xreadgroup("crashy", "dead-consumer", {key: ">"}, count=1)
    assert len(read[0][1]) == 1
    async with running_worker(bus, router, settings=FAST):
        await wait_for(lambda: len(seen) == 1, timeout=10, message="redelivery")
        await wait_for(lambda: no_pending(bus, "jobs", "crashy"))
    (n, ctx) = seen.items[0]
    assert n == 42 and ctx.delivery_count == 2


async def test_continue_after_subscriber_closes(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe(concurrency=2, start_from="beginning")
    async def handle(event: Job, ctx: Context) -> None:
        await asyncio.sleep(0.01)
        seen.add(event.n, ctx)

    for i in range(100):
        await bus.publish(Job(n=i))
    async with running_worker(bus, router, consumer="first") as first:
        await wait_for(lambda: len(seen) >= 10, message="some progress")
        await first.stop(grace=5)
    before = len(seen)
    assert before < 100
    async with running_worker(bus, router, consumer="second"):
        await wait_for(lambda: len(set(seen.values())) == 100, message="the rest")
    assert len(seen) - before <= 100  # nothing re-handled apart from what was released


async def test_concurrent_close(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe(concurrency=4, start_from="beginning")
    async def handle(event: Job, ctx: Context) -> None:
        await asyncio.sleep(0.05)
        seen.add(event.n, ctx)

    for i in range(200):
        await bus.publish(Job(n=i))
    workers = [running_worker(bus, router, consumer=f"w{i}", grace=0.5) for i in range(5)]
    started = [await w.__aenter__() for w in workers]
    assert len(started) == 5
    await wait_for(lambda: len(seen) >= 20, message="progress")
    await asyncio.wait_for(
        asyncio.gather(*(w.__aexit__(None, None, None) for w in workers)), timeout=15
    )
    group = f"test.{router.handlers[0].name}"
    # everything unfinished was released, and the closed consumers are gone
    infos = await bus.redis.xinfo_consumers(bus.keys.stream("jobs"), group)
    assert infos == []
    async with running_worker(bus, router):
        await wait_for(lambda: len(set(seen.values())) == 200, message="all 200")


async def test_continue_after_errors(bus: EventBus) -> None:
    done: set[int] = set()
    failures: list[int] = []
    router = Router()

    @router.subscribe(concurrency=8, backoff=0.05, max_attempts=4)
    async def handle(event: Job, ctx: Context) -> None:
        if event.n % 3 == 0 and ctx.attempt < 3:
            failures.append(event.n)
            raise ValueError("transient")
        done.add(event.n)

    async with running_worker(bus, router, settings=FAST):
        await bus.publish_many([Job(n=i) for i in range(60)])
        await wait_for(lambda: len(done) == 60, timeout=20, message="all 60")
    assert len(failures) == 2 * 20


async def test_in_order_with_concurrency_one(bus: EventBus) -> None:
    order: list[int] = []
    router = Router()

    @router.subscribe(concurrency=1)
    async def handle(event: Job) -> None:
        order.append(event.n)

    async with running_worker(bus, router):
        for start in range(0, 200, 50):
            await bus.publish_many([Job(n=i) for i in range(start, start + 50)])
        await wait_for(lambda: len(order) == 200, message="200 events")
    assert order == list(range(200))


async def test_publisher_close(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    bus = EventBus.from_url(eventbus_redis_url, service="pub", prefix=eventbus_prefix)
    await bus.publish(Job(n=1))
    await bus.aclose()
    await bus.aclose()  # idempotent
    with pytest.raises(PublishError):
        await bus.publish(Job(n=2))


async def test_message_context(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe
    async def handle(event: Job, ctx: Context) -> None:
        seen.add(event, ctx)

    async with running_worker(bus, router):
        stream_id = await bus.publish(Job(n=1), key="job-1", headers={"tenant": "acme"})
        plain_id = await bus.publish(Job(n=2))
        await wait_for(lambda: len(seen) == 2)
    (_, ctx), (_, plain) = seen.items
    assert ctx.stream_id == stream_id and plain.stream_id == plain_id
    assert ctx.event_id and ctx.event_id != plain.event_id
    assert ctx.event_type == "Job" and ctx.source == "test" and ctx.stream == "jobs"
    assert ctx.key == "job-1" and ctx.idempotency_key == "job-1"
    assert plain.key is None and plain.idempotency_key == plain_id
    assert ctx.headers == {"tenant": "acme"}
    assert ctx.delivery_count == 1 == ctx.attempt
    assert ctx.group == f"test.{router.handlers[0].name}"
    assert ctx.time is not None
    assert abs(datetime.fromisoformat(ctx.time) - datetime.now(UTC)) < timedelta(minutes=1)
    assert ctx.bus is bus
    ctx.logger.info("context logger works")


async def test_new_group_starts_from_beginning_new_or_time(bus: EventBus) -> None:
    for i in range(5):
        await bus.publish(Job(n=i))
    await asyncio.sleep(0.01)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.01)
    for i in range(5, 8):
        await bus.publish(Job(n=i))
    got: dict[str, list[int]] = {"beginning": [], "new": [], "time": []}
    router = Router()

    @router.subscribe(start_from="beginning")
    async def from_beginning(event: Job) -> None:
        got["beginning"].append(event.n)

    @router.subscribe(start_from="new")
    async def from_new(event: Job) -> None:
        got["new"].append(event.n)

    @router.subscribe(start_from=cut)
    async def from_time(event: Job) -> None:
        got["time"].append(event.n)

    async with running_worker(bus, router):
        await bus.publish(Job(n=100))
        await wait_for(
            lambda: len(got["beginning"]) == 9 and len(got["time"]) == 4 and got["new"],
            message=lambda: str(got),
        )
    assert sorted(got["beginning"]) == [0, 1, 2, 3, 4, 5, 6, 7, 100]
    assert sorted(got["time"]) == [5, 6, 7, 100]
    assert got["new"] == [100]


async def test_reconnect_after_redis_restart(redis_server_factory: type[RedisServer]) -> None:
    server = redis_server_factory(appendonly=True)
    bus = EventBus.from_url(server.url, service="rc", prefix="rc")
    seen: set[int] = set()
    router = Router()

    @router.subscribe
    async def handle(event: Job) -> None:
        seen.add(event.n)

    try:
        async with running_worker(bus, router, settings=FAST):
            await bus.publish(Job(n=1))
            await wait_for(lambda: 1 in seen)
            server.restart()
            await wait_for(lambda: publish_ok(bus, Job(n=2)), timeout=15)
            await wait_for(lambda: 2 in seen, timeout=15, message="delivery after restart")
    finally:
        await bus.aclose()


async def publish_ok(bus: EventBus, event: Job) -> bool:
    try:
        await bus.publish(event)
    except PublishError:
        return False
    return True


async def test_groups_are_isolated(bus: EventBus) -> None:
    """A stuck handler and a failing handler do not delay a healthy one."""
    release = asyncio.Event()
    healthy: list[int] = []
    router = Router()

    @router.subscribe(concurrency=2)
    async def stuck(event: Job) -> None:
        await release.wait()

    @router.subscribe(concurrency=2, backoff=0.05, max_attempts=100)
    async def failing(event: Job) -> None:
        raise RuntimeError("always")

    @router.subscribe(concurrency=4)
    async def fine(event: Job) -> None:
        healthy.append(event.n)

    async with running_worker(bus, router, settings=FAST, grace=0.5):
        await bus.publish_many([Job(n=i) for i in range(100)])
        await wait_for(lambda: len(healthy) == 100, message="healthy handler done")
        release.set()
