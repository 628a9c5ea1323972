"""The delivery protocol in detail: dead letters, leases, release, reclaim, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from eventbus import Backoff, Context, EventBus, Router, Worker, WorkerSettings
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job, Other
from tests.helpers import (
    Seen,
    dlq_entries,
    group_state,
    no_pending,
    pending_count,
    redis_version,
)

FAST = WorkerSettings(grace=5, reclaim_interval=0.2)


async def test_poison_entry_ends_in_dlq_after_max_attempts(bus: EventBus) -> None:
    attempts: list[int] = []
    router = Router()

    @router.subscribe(name="poisoned", max_attempts=3, backoff=0.05)
    async def handle(event: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"cannot handle job {event.n}")

    async with running_worker(bus, router, settings=FAST):
        stream_id = await bus.publish(Job(n=13), key="k13")
        await wait_for(lambda: dlq_entries(bus, "jobs"), message="a dead letter")
        await wait_for(lambda: no_pending(bus, "jobs", "test.poisoned"))
    assert attempts == [1, 2, 3]
    [dead] = await dlq_entries(bus, "jobs")
    assert dead["dlq_group"] == "test.poisoned"
    assert dead["dlq_handler"] == "poisoned"
    assert dead["dlq_stream_id"] == stream_id
    assert dead["dlq_reason"] == "failed"
    assert dead["dlq_error_type"] == "ValueError"
    assert dead["dlq_error"] == "cannot handle job 13"
    assert "Traceback" in dead["dlq_traceback"] and "cannot handle job 13" in dead["dlq_traceback"]
    assert dead["dlq_attempts"] == "3"
    # the original envelope travels with it
    assert (
        dead["type"] == "Job" and dead["key"] == "k13" and dead["data"] == '{"n":13,"payload":""}'
    )


async def test_undecodable_and_unknown_types_go_to_dlq_at_once(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe(name="strict", max_attempts=5)
    async def handle(event: Job, ctx: Context) -> None:
        seen.add(event.n, ctx)

    key = bus.keys.stream("jobs")
    async with running_worker(bus, router, settings=FAST):
        await bus.redis.xadd(key, {"type": "Job", "data": "{not json"})
        await bus.redis.xadd(key, {"type": "Job", "data": '{"n": "x"}'})
        await bus.redis.xadd(key, {"data": "{}"})
        await bus.redis.xadd(key, {"type": "JobV2", "data": "{}"})
        await bus.redis.xadd(key, {"type": "Job", "data": '{"n": 1}'})  # redis-cli style: fine
        await wait_for(lambda: len(seen) == 1)
        await wait_for(lambda: dlq_has(bus, 4), message="4 dead letters")
        await wait_for(lambda: no_pending(bus, "jobs", "test.strict"))
    dead = sorted(await dlq_entries(bus, "jobs"), key=lambda d: d["dlq_stream_id"])
    reasons = [(d["dlq_reason"], d["dlq_error"]) for d in dead]
    assert [r for r, _ in reasons] == ["undecodable"] * 4
    assert "does not decode as Job" in reasons[0][1]
    assert "Expected `int`" in reasons[1][1]
    assert "no 'type' field" in reasons[2][1]
    assert "unknown event type 'JobV2'" in reasons[3][1] and "redrive" in reasons[3][1]
    assert all(d["dlq_attempts"] == "1" for d in await dlq_entries(bus, "jobs"))


async def dlq_len(bus: EventBus) -> int:
    return int(await bus.redis.xlen(bus.keys.dlq("jobs")))


async def dlq_has(bus: EventBus, count: int) -> bool:
    return await dlq_len(bus) == count


async def test_known_types_of_other_handlers_are_skipped(bus: EventBus) -> None:
    seen = Seen()
    router = Router()

    @router.subscribe(name="jobs-only")
    async def handle(event: Job, ctx: Context) -> None:
        seen.add(event.n, ctx)

    async with running_worker(bus, router) as worker:
        await bus.publish(Other(text="not for me"))
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(seen) == 1)
        stats = worker.consumers[0].stats
        await wait_for(lambda: stats.skipped == 1)
        await wait_for(lambda: no_pending(bus, "jobs", "test.jobs-only"))
    assert await dlq_len(bus) == 0


async def test_targeted_redelivery_runs_only_in_its_group(bus: EventBus) -> None:
    got: dict[str, list[int]] = {"a": [], "b": []}
    router = Router()

    @router.subscribe(name="a")
    async def a(event: Job) -> None:
        got["a"].append(event.n)

    @router.subscribe(name="b")
    async def b(event: Job) -> None:
        got["b"].append(event.n)

    async with running_worker(bus, router) as worker:
        await bus.redis.xadd(
            bus.keys.stream("jobs"), {"type": "Job", "data": '{"n": 7}', "target": "test.b"}
        )
        await bus.publish(Job(n=8))
        await wait_for(lambda: got["a"] == [8] and sorted(got["b"]) == [7, 8])
        skipped = {c.spec.name: c.stats.skipped for c in worker.consumers}
        await wait_for(lambda: worker.consumers[0].stats.skipped == 1)
    assert skipped["b"] == 0


async def test_handler_blocking_past_its_lease_is_not_stolen(bus: EventBus) -> None:
    """The lease keeper extends what a live worker holds: a second worker of the
    same group never reclaims it, however long the handler takes."""
    calls: list[tuple[str, int]] = []
    router = Router()

    @router.subscribe(name="slow", lease=1)
    async def slow(event: Job, ctx: Context) -> None:
        calls.append((ctx.group, ctx.delivery_count))
        await asyncio.sleep(3.5)  # 3.5 leases

    settings = WorkerSettings(grace=10, reclaim_interval=0.1)
    async with (
        running_worker(bus, router, consumer="one", settings=settings),
        running_worker(bus, router, consumer="two", settings=settings) as two,
    ):
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(calls) == 1)
        await wait_for(lambda: no_pending(bus, "jobs", "test.slow"), timeout=10)
        reclaimed = two.consumers[0].stats.reclaimed
    assert calls == [("test.slow", 1)]
    assert reclaimed == 0


async def test_reads_never_exceed_free_slots(bus: EventBus) -> None:
    release = asyncio.Event()
    router = Router()

    @router.subscribe(name="bounded", concurrency=3, start_from="beginning")
    async def handle(event: Job) -> None:
        await release.wait()

    await bus.publish_many([Job(n=i) for i in range(30)])
    async with running_worker(bus, router, grace=5) as worker:
        await wait_for(lambda: pending_count(bus, "jobs", "test.bounded"), message="reads")
        for _ in range(10):  # stays bounded while the handlers hang
            assert await pending_count(bus, "jobs", "test.bounded") == 3
            assert worker.consumers[0].in_flight == 3
            await asyncio.sleep(0.05)
        if await redis_version(bus) >= (7, 0):  # 6.2 has no entries-read / lag
            state = await group_state(bus, "jobs", "test.bounded")
            assert state["entries-read"] == 3 and state["lag"] == 27
        release.set()
        await wait_for(lambda: no_pending(bus, "jobs", "test.bounded"))


async def test_acks_are_batched(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    bus = EventBus.from_url(server.url, service="acks", prefix="acks")
    count = 0
    router = Router()

    @router.subscribe(name="noop", concurrency=64)
    async def noop(event: Job) -> None:
        nonlocal count
        count += 1

    try:
        async with running_worker(bus, router):
            await bus.redis.config_resetstat()
            await bus.publish_many([Job(n=i) for i in range(1000)])
            await wait_for(lambda: count == 1000)
            await wait_for(lambda: no_pending(bus, "jobs", "acks.noop"))
            stats = await bus.redis.info("commandstats")
        xack_calls = stats["cmdstat_xack"]["calls"]
        assert xack_calls <= 1000 / 5, f"{xack_calls} XACK calls for 1000 events"
    finally:
        await bus.aclose()


async def test_backoff_delays_the_retry(bus: EventBus) -> None:
    times: list[float] = []
    router = Router()

    @router.subscribe(name="backoff", backoff=Backoff(initial=1.5, jitter=0.0), lease=5)
    async def handle(event: Job, ctx: Context) -> None:
        times.append(time.monotonic())
        if ctx.attempt == 1:
            raise RuntimeError("retry me")

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(times) == 2, timeout=10)
    assert times[1] - times[0] >= 1.4  # claimable only once the backoff has passed


async def test_timeout_fails_the_attempt(bus: EventBus) -> None:
    attempts: list[int] = []
    router = Router()

    @router.subscribe(name="timeboxed", timeout=0.1, max_attempts=2, backoff=0.01)
    async def handle(event: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await asyncio.sleep(10)

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_len(bus), timeout=10)
    [dead] = await dlq_entries(bus, "jobs")
    assert attempts == [1, 2]
    assert dead["dlq_error_type"] == "TimeoutError"
    assert dead["dlq_error"] == "handler exceeded its timeout of 0.1s"


async def test_sync_handlers_run_in_their_own_threads(bus: EventBus) -> None:
    threads: set[str] = set()
    done: list[int] = []
    lock = threading.Lock()
    loop_thread = threading.current_thread().name
    router = Router()

    @router.subscribe(name="sync", concurrency=4)
    def handle(event: Job, ctx: Context) -> None:
        time.sleep(0.01)  # blocking is fine here: not on the event loop
        with lock:
            threads.add(threading.current_thread().name)
            done.append(event.n)

    async with running_worker(bus, router):
        await bus.publish_many([Job(n=i) for i in range(40)])
        await wait_for(lambda: len(done) == 40)
    assert loop_thread not in threads
    assert all(name.startswith("eventbus-sync") for name in threads)
    assert 1 < len(threads) <= 4


async def test_shutdown_releases_unfinished_work_for_others(bus: EventBus) -> None:
    """Past the grace period, unfinished entries are released claimable at once,
    and the interrupted delivery does not count as an attempt."""
    calls: list[tuple[str, int]] = []
    router = Router()

    @router.subscribe(name="long", lease=30, concurrency=2)
    async def handle(event: Job, ctx: Context) -> None:
        calls.append((ctx.envelope.stream_id, ctx.delivery_count))
        if len(calls) <= 2:
            await asyncio.sleep(60)

    first = Worker(bus, router, consumer="first", settings=WorkerSettings(grace=0.2))
    await first.start()
    await bus.publish_many([Job(n=1), Job(n=2)])
    await wait_for(lambda: len(calls) == 2)
    await asyncio.wait_for(first.stop(), timeout=10)
    # released, not waiting for the 30 s lease: another worker takes them at once
    async with running_worker(bus, router, consumer="second", settings=FAST):
        await wait_for(lambda: len(calls) == 4, timeout=5, message="redelivery after release")
        await wait_for(lambda: no_pending(bus, "jobs", "test.long"))
    assert [count for _, count in calls] == [1, 1, 1, 1]
    consumers = await bus.redis.xinfo_consumers(bus.keys.stream("jobs"), "test.long")
    # "second" owned nothing when it stopped, so it deleted itself; "first" still held
    # its released entries when it stopped: it owns nothing now and hygiene removes it
    assert [(c["name"].decode(), c["pending"]) for c in consumers] == [("first", 0)]


async def test_in_flight_handlers_finish_within_grace(bus: EventBus) -> None:
    finished: list[int] = []
    router = Router()

    @router.subscribe(name="graceful")
    async def handle(event: Job) -> None:
        await asyncio.sleep(0.5)
        finished.append(event.n)

    worker = Worker(bus, router, settings=WorkerSettings(grace=5))
    await worker.start()
    await bus.publish(Job(n=1))
    await wait_for(lambda: worker.consumers[0].in_flight == 1)
    await worker.stop()
    assert finished == [1]
    assert await pending_count(bus, "jobs", "test.graceful") == 0


async def test_idle_consumers_owning_nothing_are_deleted(bus: EventBus) -> None:
    router = Router()

    @router.subscribe(name="hygiene", lease=1)
    async def handle(event: Job) -> None: ...

    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "test.hygiene", id="$", mkstream=True)
    await bus.redis.execute_command("XGROUP", "CREATECONSUMER", key, "test.hygiene", "ghost")
    await bus.publish(Job(n=1))
    # "holder" owns a pending entry: it must survive however idle it is
    await bus.redis.xreadgroup("test.hygiene", "holder", {key: ">"}, count=1)
    settings = WorkerSettings(
        consumer_idle_timeout=0.2, hygiene_interval=0.1, reclaim_interval=3600
    )
    async with running_worker(bus, router, consumer="me", settings=settings):
        # (before Redis 7.2 a blocked XREADGROUP does not create "me" yet)
        await wait_for(lambda: consumers_are(bus, "test.hygiene", {"holder"}, optional={"me"}))
        await bus.publish(Job(n=2))  # "me" reads it: "me" exists and is never deleted
        await wait_for(lambda: consumers_are(bus, "test.hygiene", {"holder", "me"}))
        for _ in range(5):
            await asyncio.sleep(0.1)
            assert await consumers_are(bus, "test.hygiene", {"holder", "me"})


async def consumers_are(
    bus: EventBus, group: str, expected: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> bool:
    infos = await bus.redis.xinfo_consumers(bus.keys.stream("jobs"), group)
    return {i["name"].decode() for i in infos} - set(optional) == expected


async def test_group_destroyed_while_running_is_recreated(bus: EventBus) -> None:
    seen: list[int] = []
    router = Router()

    @router.subscribe(name="phoenix")
    async def handle(event: Job) -> None:
        seen.append(event.n)

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: seen == [1])
        await bus.redis.xgroup_destroy(bus.keys.stream("jobs"), "test.phoenix")
        await bus.publish(Job(n=2))
        await wait_for(lambda: seen == [1, 2], timeout=10, message=lambda: f"seen {seen}")
    # resumed after the last entry it had seen: 1 is not handled twice


async def test_stream_flushed_while_running(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """FLUSHALL (or a restart without persistence): the group is re-created and
    everything published afterwards is delivered."""
    server = redis_server_factory()
    bus = EventBus.from_url(server.url, service="fl", prefix="fl")
    seen: list[int] = []
    router = Router()

    @router.subscribe(name="flush")
    async def handle(event: Job) -> None:
        seen.append(event.n)

    try:
        async with running_worker(bus, router, settings=FAST):
            await bus.publish(Job(n=1))
            await wait_for(lambda: seen == [1])
            await bus.redis.flushall()
            await bus.publish_many([Job(n=2), Job(n=3)])
            await wait_for(lambda: sorted(seen) == [1, 2, 3], timeout=10, message=lambda: str(seen))
    finally:
        await bus.aclose()
