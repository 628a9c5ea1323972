"""Consumer-side idempotency: keys handled once per group, transactions applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from eventbus import ConfigurationError, Context, EventBus, Router, WorkerSettings
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job
from tests.helpers import all_settled, dlq_entries, no_pending

FAST = WorkerSettings(grace=5, reclaim_interval=0.1)


async def counter(bus: EventBus, name: str) -> int:
    return int(await bus.redis.get(f"{bus.keys.prefix}:{name}") or 0)


@pytest.mark.parametrize("transactional", [False, True], ids=["key-based", "transactional"])
async def test_one_key_ten_times_three_workers_effect_once(
    bus: EventBus, transactional: bool
) -> None:
    router = Router()

    @router.subscribe(name="once", idempotent=True, concurrency=4, backoff=0.05)
    async def handle(event: Job, ctx: Context) -> None:
        await asyncio.sleep(0.05)  # long enough for the other deliveries to collide
        key = f"{ctx.bus.keys.prefix}:effect"
        if transactional:
            ctx.transaction().incr(key)
        else:
            await ctx.bus.redis.incr(key)

    async with (
        running_worker(bus, router, consumer="w1", settings=FAST) as w1,
        running_worker(bus, router, consumer="w2", settings=FAST) as w2,
        running_worker(bus, router, consumer="w3", settings=FAST) as w3,
    ):
        # the same logical event, ten entries (publisher-side dedup off to get ten)
        await asyncio.gather(*(bus.publish(Job(n=1), key="k", dedup_window=0) for _ in range(10)))
        assert await bus.redis.xlen(bus.keys.stream("jobs")) == 10
        await wait_for(lambda: all_settled(bus, "jobs", "test.once"), timeout=20)
        stats = [w.consumers[0].stats for w in (w1, w2, w3)]
    assert await counter(bus, "effect") == 1
    assert sum(s.ok for s in stats) == 1
    assert sum(s.duplicates for s in stats) == 9
    assert sum(s.busy for s in stats) >= 1  # some collided while the first was in flight


async def test_replaying_a_group_skips_what_it_already_did(bus: EventBus) -> None:
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="replayed", idempotent=True)
    async def handle(event: Job) -> None:
        handled.append(event.n)

    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.publish_many([Job(n=i) for i in range(5)])  # no keys: stream ids dedupe
        await wait_for(lambda: len(handled) == 5)
        await bus.redis.xgroup_setid(bus.keys.stream("jobs"), "test.replayed", "0")
        await bus.publish(Job(n=5))
        await wait_for(lambda: handled == [0, 1, 2, 3, 4, 5] or sorted(handled) == list(range(6)))
        await wait_for(lambda: worker.consumers[0].stats.duplicates == 5)
    assert sorted(handled) == list(range(6))


async def test_a_failed_attempt_applies_nothing_and_the_retry_applies_once(bus: EventBus) -> None:
    attempts: list[int] = []
    router = Router()

    @router.subscribe(name="tx-retry", idempotent=True, backoff=0.05)
    async def handle(event: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        tx = ctx.transaction()
        tx.hincrby(ctx.slot_key("effects"), str(event.n), 1)
        tx.rpush(ctx.slot_key("log"), f"applied {event.n}")
        if ctx.attempt == 1:
            raise RuntimeError("fails after queuing its writes")

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=7))
        await wait_for(lambda: len(attempts) == 2)
        await wait_for(lambda: no_pending(bus, "jobs", "test.tx-retry"))
    assert attempts == [1, 2]
    effects = f"{bus.keys.stream('jobs')}:app:effects"
    assert await bus.redis.hgetall(effects) == {b"7": b"1"}
    assert await bus.redis.lrange(f"{bus.keys.stream('jobs')}:app:log", 0, -1) == [b"applied 7"]


async def test_transaction_needs_an_idempotent_handler(bus: EventBus) -> None:
    router = Router()

    @router.subscribe(name="not-idempotent", max_attempts=1)
    async def handle(event: Job, ctx: Context) -> None:
        ctx.transaction()

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_entries(bus, "jobs"))
    [dead] = await dlq_entries(bus, "jobs")
    assert dead["dlq_error_type"] == "ConfigurationError"
    assert "cannot use ctx.transaction(): it is not idempotent" in dead["dlq_error"]


def test_idempotency_options_are_checked() -> None:
    async def handler(event: Job) -> None: ...

    with pytest.raises(ConfigurationError, match="only applies with idempotent=True"):
        Router().subscribe(idempotency_ttl=10)(handler)
    with pytest.raises(ConfigurationError, match="on_store_error must be"):
        Router().subscribe(idempotent=True, on_store_error="ignore")(handler)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="did you mean 'idempotent'"):
        Router().subscribe(exactly_once=True)(handler)  # type: ignore[call-arg]
    [spec] = (r := Router()).subscribe(idempotent=True)(handler) and r.handlers
    assert spec.idempotency is not None and spec.idempotency.ttl_s == 86400


async def test_markers_expire_after_their_ttl(bus: EventBus) -> None:
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="short-memory", idempotent=True, idempotency_ttl=0.5)
    async def handle(event: Job) -> None:
        handled.append(event.n)

    async with running_worker(bus, router, settings=FAST):
        stream_id = await bus.publish(Job(n=1))
        await wait_for(lambda: handled == [1])
        marker = bus.keys.idem("jobs", "test.short-memory", stream_id)
        await wait_for(lambda: marker_is(bus, marker, b"done"))
        assert 0 < await bus.redis.pttl(marker) <= 500
        await wait_for(lambda: marker_gone(bus, marker), message="the marker to expire")
        # replayed after the TTL, it runs again: the window is the TTL
        await bus.redis.xgroup_setid(bus.keys.stream("jobs"), "test.short-memory", "0")
        await wait_for(lambda: handled == [1, 1])


async def marker_is(bus: EventBus, marker: str, value: bytes) -> bool:
    return await bus.redis.get(marker) == value


async def marker_gone(bus: EventBus, marker: str) -> bool:
    return not await bus.redis.exists(marker)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_idempotency_store_down(
    bus: EventBus, redis_server_factory: Callable[..., RedisServer], policy: str
) -> None:
    store = redis_server_factory(appendonly=True)
    handled: list[int] = []
    router = Router()

    @router.subscribe(
        name="guarded", idempotent=True, idempotency_store=store.url, on_store_error=policy,
        backoff=0.1, max_attempts=3,
    )  # fmt: skip
    async def handle(event: Job) -> None:
        handled.append(event.n)

    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.publish(Job(n=1))
        await wait_for(lambda: handled == [1])
        store.stop()
        await bus.publish(Job(n=2))
        stats = worker.consumers[0].stats
        await wait_for(lambda: stats.store_errors >= 1)
        if policy == "fail_open":
            await wait_for(lambda: handled == [1, 2])  # ran unguarded, counted
        else:
            assert handled == [1]  # does not run without its guard...
            store.start()
            await wait_for(lambda: handled == [1, 2], timeout=15)  # ...and nothing is lost
        await wait_for(lambda: no_pending(bus, "jobs", "test.guarded"))
    assert await dlq_entries(bus, "jobs") == []


async def test_shutdown_drops_claims_so_others_take_over_at_once(bus: EventBus) -> None:
    runs: list[str] = []
    router = Router()

    @router.subscribe(name="handover", idempotent=True, lease=30)
    async def handle(event: Job, ctx: Context) -> None:
        runs.append(ctx.group)
        if len(runs) == 1:
            await asyncio.sleep(60)  # interrupted by the shutdown
        ctx.transaction().incr(ctx.slot_key("done"))

    first = running_worker(bus, router, consumer="first", grace=0.2)
    await first.__aenter__()
    await bus.publish(Job(n=1))
    await wait_for(lambda: len(runs) == 1)
    await first.__aexit__(None, None, None)
    # the 30 s lease and claim would make a successor wait; released and dropped, it need not
    async with running_worker(bus, router, consumer="second", settings=FAST):
        await wait_for(lambda: len(runs) == 2, timeout=5, message="the takeover")
        await wait_for(lambda: no_pending(bus, "jobs", "test.handover"))
    assert await bus.redis.get(f"{bus.keys.stream('jobs')}:app:done") == b"1"


async def test_a_transaction_redis_rejects_fails_the_attempt_with_the_real_error(
    bus: EventBus,
) -> None:
    runs: list[int] = []
    router = Router()

    @router.subscribe(name="bad-tx", idempotent=True, max_attempts=2, backoff=0.05, lease=30)
    async def handle(event: Job, ctx: Context) -> None:
        runs.append(ctx.attempt)
        ctx.transaction().call("NOSUCHCOMMAND", "x")

    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_entries(bus, "jobs"), timeout=10)
        stats = worker.consumers[0].stats
    [dead] = await dlq_entries(bus, "jobs")
    assert runs == [1, 2]  # retried after the backoff, not after the 30 s lease
    assert dead["dlq_reason"] == "failed" and "NOSUCHCOMMAND" in dead["dlq_error"].upper()
    assert stats.errors == 1 and stats.dead == 1  # the last failure counts as dead


async def test_bad_transaction_arguments_fail_inside_the_handler(bus: EventBus) -> None:
    router = Router()

    @router.subscribe(name="bad-arg", idempotent=True, max_attempts=1)
    async def handle(event: Job, ctx: Context) -> None:
        ctx.transaction().hset(ctx.slot_key("h"), "field", None)  # type: ignore[arg-type]

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_entries(bus, "jobs"))
    [dead] = await dlq_entries(bus, "jobs")
    assert "argument None is a NoneType" in dead["dlq_error"]
    assert "test_idempotency.py" in dead["dlq_traceback"]  # raised where it was written


async def test_fail_closed_marks_done_before_it_acknowledges(
    bus: EventBus, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """A separate store that refuses the done marker (read-only, say after a failover):
    under fail_closed the entry is not acknowledged until the marker is written, so a
    later duplicate of the key is still recognised."""
    import redis as sync_redis

    store = redis_server_factory()
    admin = sync_redis.Redis(port=store.port)
    runs: list[int] = []
    router = Router()

    @router.subscribe(
        name="closed", idempotent=True, idempotency_store=store.url, on_store_error="fail_closed"
    )
    async def handle(event: Job) -> None:
        runs.append(event.n)
        if len(runs) == 1:
            admin.replicaof("127.0.0.1", "1")  # read-only from now on (no such master)

    try:
        async with running_worker(bus, router, settings=FAST) as worker:
            await bus.publish(Job(n=1), key="k", dedup_window=0)
            await wait_for(lambda: runs == [1])
            # the commit was tried, refused, and is being retried: not acknowledged meanwhile
            await wait_for(lambda: worker.consumers[0]._commits.backlog == 1)
            assert not await no_pending(bus, "jobs", "test.closed")
            admin.replicaof("NO", "ONE")
            await wait_for(lambda: no_pending(bus, "jobs", "test.closed"), timeout=10)
            await bus.publish(Job(n=1), key="k", dedup_window=0)  # a duplicate of the key
            await wait_for(lambda: worker.consumers[0].stats.duplicates == 1)
        assert runs == [1]
    finally:
        admin.close()


async def test_timed_out_sync_handler_keeps_its_claim(bus: EventBus) -> None:
    import threading
    import time as time_mod

    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()
    router = Router()

    @router.subscribe(
        name="sync-overrun", idempotent=True, timeout=0.2, backoff=0.05, concurrency=2
    )
    def handle(event: Job, ctx: Context) -> None:
        start = time_mod.monotonic()
        if ctx.attempt == 1:
            time_mod.sleep(1.5)  # outlives its timeout; the retry must not run beside it
        with lock:
            intervals.append((start, time_mod.monotonic()))

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(intervals) == 2, timeout=15)
        await wait_for(lambda: no_pending(bus, "jobs", "test.sync-overrun"))
    (_, first_end), (second_start, _) = sorted(intervals)
    assert second_start >= first_end  # never at the same time


async def test_a_transaction_with_a_wrong_arity_applies_nothing(bus: EventBus) -> None:
    """redis.acl_check_cmd checks names and permissions, not arity: INCR ran and SET k
    (no value) failed, leaving half a transaction applied and the entry acknowledged."""
    router = Router()

    @router.subscribe(name="arity", idempotent=True, max_attempts=1)
    async def handle(event: Job, ctx: Context) -> None:
        tx = ctx.transaction()
        tx.incr(ctx.slot_key("n"))
        tx.call("SET", ctx.slot_key("k"))

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_entries(bus, "jobs"), timeout=10)
    [dead] = await dlq_entries(bus, "jobs")
    assert "wrong number of arguments" in dead["dlq_error"]
    assert await bus.redis.get(f"{bus.keys.stream('jobs')}:app:n") is None
