"""Faults and hostile entries found by review (issue 10): each test failed before its fix."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import pytest
import redis as sync_redis

from eventbus import (
    Context,
    EventBus,
    PermissionDenied,
    Router,
    Stream,
    Worker,
    WorkerSettings,
)
from eventbus.errors import ConfigurationError, ConnectionFailed, EventTooLarge
from eventbus.scripts import SCRIPTS
from eventbus.testing import RedisServer, running_worker, wait_for
from eventbus.worker.deadletter import MAX_COPIED_PAIRS
from tests.apps.events import Job, Other
from tests.helpers import FaultProxy, all_settled, dlq_entries, no_pending, pending_count

FAST = WorkerSettings(grace=5, reclaim_interval=0.1)
TAKEOVER_WARNING = "claimed by another consumer"


async def test_transactional_commits_are_not_aborted_by_their_own_heartbeats(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease keeper refreshes each marker every lease/3; a WATCHed commit saw that
    PEXPIRE as a change and aborted (24 in 1,000 at a 1 s lease), and the event ran again
    a lease later. One worker, no faults: every event runs once, no takeover warnings."""
    calls: Counter[int] = Counter()
    router = Router()

    @router.subscribe(name="tx", idempotent=True, lease=1, concurrency=32)
    async def handle(event: Job, ctx: Context) -> None:
        calls[event.n] += 1
        await asyncio.sleep(0.005 * (event.n % 7))  # commits spread over the heartbeats
        ctx.transaction().hincrby(ctx.slot_key("effects"), str(event.n), 1)

    n = 3000
    caplog.set_level(logging.WARNING, logger="eventbus")
    async with running_worker(bus, router, settings=FAST) as worker:
        for start in range(0, n, 500):
            await bus.publish_many([Job(n=i) for i in range(start, start + 500)])
        await wait_for(lambda: worker.consumers[0].stats.ok == n, timeout=60)
        await wait_for(lambda: no_pending(bus, "jobs", "test.tx"))
        stats = worker.consumers[0].stats
    effects = await bus.redis.hgetall(f"{bus.keys.stream('jobs')}:app:effects")
    assert len(effects) == n and set(effects.values()) == {b"1"}
    assert set(calls.values()) == {1}, "some events ran twice"
    assert stats.lost == 0
    assert TAKEOVER_WARNING not in caplog.text


async def test_fail_open_never_applies_a_transaction_twice(
    redis_server_factory: Callable[..., RedisServer], make_bus: Callable[..., EventBus]
) -> None:
    """Worker A cannot reach Redis as it begins an idempotent delivery, so it runs the
    handler unguarded (fail_open); Redis is killed and restarted, and A stays cut off
    longer than the lease; worker B reclaims, runs and commits; then A's slow handler
    returns and A commits too. Its commit must check the key: applied once in all."""
    server = redis_server_factory(appendonly=True)
    prefix = "fo"
    direct = make_bus(server.url, prefix)
    a_returns = asyncio.Event()
    runs: list[str] = []

    def app(who: str) -> Router:
        router = Router()

        @router.subscribe(name="tx", idempotent=True, lease=2, backoff=0.1)
        async def handle(event: Job, ctx: Context) -> None:
            runs.append(who)
            if who == "a":
                await a_returns.wait()
            ctx.transaction().incr(ctx.slot_key("effect"))

        return router

    effect_key = f"{direct.keys.stream('jobs')}:app:effect"
    async with FaultProxy(server.port) as proxy:
        via_proxy = make_bus(f"redis://127.0.0.1:{proxy.port}/0", prefix)
        async with running_worker(via_proxy, app("a"), consumer="a", settings=FAST) as a:
            proxy.cut_on(SCRIPTS.idem_begin.sha.encode())  # begin fails: A runs unguarded
            await direct.publish(Job(n=1))
            await wait_for(lambda: runs == ["a"], message="A runs unguarded")
            server.kill()  # Redis down for longer than the lease
            await asyncio.sleep(2.5)
            server.start()
            async with running_worker(direct, app("b"), consumer="b", settings=FAST):
                await wait_for(lambda: runs == ["a", "b"], timeout=15, message="B's takeover")
                await wait_for(lambda: direct.redis.get(effect_key), message="B's commit")
                proxy.heal()
                a_returns.set()  # A's handler returns: it must not apply its writes
                a_stats = a.consumers[0].stats
                await wait_for(lambda: a_stats.ok + a_stats.duplicates == 1, message="A's commit")
                await wait_for(lambda: no_pending(direct, "jobs", "test.tx"), timeout=15)
    assert await direct.redis.get(effect_key) == b"1"


async def test_entries_of_any_shape_are_dead_lettered(bus: EventBus) -> None:
    """An entry with thousands of fields broke dead_letter.lua (Lua's unpack() limit):
    retried every lease forever. Undecodable or failing, it reaches the DLQ."""
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="shapes", max_attempts=1, backoff=0.05)
    async def handle(event: Job, ctx: Context) -> None:
        handled.append(event.n)
        raise RuntimeError("always fails")

    key = bus.keys.stream("jobs")
    many = {f"h:x{i}": "v" for i in range(5000)}
    async with running_worker(bus, router, settings=FAST):
        await bus.redis.xadd(key, {"type": "NoSuchType", "data": "{}", **many})
        await bus.redis.xadd(key, {"type": "Job", "data": '{"n": 7}', **many})
        await wait_for(lambda: len_is(dlq_entries(bus, "jobs"), 2), timeout=15)
        await wait_for(lambda: no_pending(bus, "jobs", "test.shapes"))
    assert handled == [7]
    letters = await dlq_entries(bus, "jobs")
    assert {d["dlq_reason"] for d in letters} == {"undecodable", "failed"}
    for letter in letters:
        assert "more fields" in letter["dlq_omitted"]
        assert letter["type"] in ("NoSuchType", "Job")  # the envelope is kept
        assert len(letter) < 2 * MAX_COPIED_PAIRS


async def len_is(entries: object, n: int) -> bool:
    return len(await entries) == n  # type: ignore[misc, arg-type]


async def test_oversized_entries_are_dead_lettered_unread(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5 MB entry was decoded (a 50 MB one took 248 MB of RSS) and copied whole into
    the DLQ per group; a huge `type` was repeated in log lines and error texts."""
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="limited", max_attempts=1)
    async def limited(event: Job) -> None:
        handled.append(event.n)

    @router.subscribe(name="roomy", max_event_bytes=8 * 1024 * 1024)
    async def roomy(event: Job) -> None:
        handled.append(-event.n)

    key = bus.keys.stream("jobs")
    big = b'{"n": 1, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    caplog.set_level(logging.WARNING, logger="eventbus")
    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.redis.xadd(key, {"type": "Job", "data": big})
        await bus.redis.xadd(key, {"type": "T" * 10_000_000, "data": "{}"})
        await wait_for(lambda: len_is(dlq_entries(bus, "jobs"), 3), timeout=20)
        await wait_for(lambda: handled == [-1], message="the roomy handler took it")
        stats = {c.group: c.stats for c in worker.consumers}
    letters = await dlq_entries(bus, "jobs")
    by_group = Counter(d["dlq_group"] for d in letters)
    assert by_group == {"test.limited": 2, "test.roomy": 1}
    for letter in letters:
        assert letter["dlq_reason"] == "too_large"
        assert "data" not in letter or len(letter["data"]) < 1024 * 1024  # not copied
        assert len(letter["dlq_error"]) < 3000
    assert stats["test.limited"].too_large == 2
    assert max(len(r.getMessage()) for r in caplog.records) < 3000


async def test_a_stream_declares_its_limit_for_publishers_and_consumers(
    eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    """`Stream(max_event_bytes=)` applies to both sides; what a publisher with the same
    limit accepts (payload, key and headers all counted) is consumed, never too_large."""
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="per-stream")
    async def handle(event: Job) -> None:
        handled.append(event.n)

    limited = [Stream("jobs", max_event_bytes=2 * 1024 * 1024)]
    async with (
        EventBus.from_url(
            eventbus_redis_url, service="test", prefix=eventbus_prefix, streams=limited
        ) as bus,
        running_worker(bus, router, settings=FAST),
    ):
        headers = {f"h{i}": "x" * 1500 for i in range(999)}  # 1.5 MB of headers
        await bus.publish(Job(n=1), headers=headers)  # over the bus's 1 MiB: the stream's
        with pytest.raises(EventTooLarge):
            await bus.publish(Job(n=2), headers={**headers, "big": "x" * 600_000})
        await bus.redis.xadd(bus.keys.stream("jobs"), {"type": "Job", "data": "x" * 2_200_000})
        await wait_for(lambda: len_is(dlq_entries(bus, "jobs"), 1))
        await wait_for(lambda: handled == [1])
        [letter] = await dlq_entries(bus, "jobs")
    assert letter["dlq_reason"] == "too_large"


def test_limits_are_checked_when_declared() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="max_event_bytes"):

        @router.subscribe(name="bad", max_event_bytes=0)
        async def handle(event: Job) -> None: ...

    with pytest.raises(ConfigurationError, match="max_event_bytes"):
        Stream("s", max_event_bytes=-1)


async def test_the_dead_letter_cap_is_counted_and_warnings_are_rate_limited(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """200k garbage entries gave 87 MB of WARNING lines, and the DLQ had no cap."""
    router = Router()

    @router.subscribe(name="capped")
    async def handle(event: Job) -> None: ...

    assert WorkerSettings().dlq_maxlen == 100_000
    key = bus.keys.stream("jobs")
    caplog.set_level(logging.WARNING, logger="eventbus")
    settings = WorkerSettings(grace=5, reclaim_interval=0.1, dlq_maxlen=10)
    async with running_worker(bus, router, settings=settings) as worker:
        pipe = bus.redis.pipeline(transaction=False)
        for i in range(1000):
            pipe.xadd(key, {"type": "Job", "data": f"not json {i}"})
        await pipe.execute()
        stats = worker.consumers[0].stats
        await wait_for(lambda: stats.dead == 1000, timeout=30)
    dlq_len = await bus.redis.xlen(bus.keys.dlq("jobs"))
    assert dlq_len < 1000
    assert stats.dlq_trimmed == 1000 - dlq_len
    moved = [r for r in caplog.records if "moved to" in r.getMessage()]
    assert 1 <= len(moved) <= 10, len(moved)


def acl_user(server: RedisServer, name: str, *rules: str) -> str:
    admin = sync_redis.Redis(port=server.port)
    try:
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw", *rules)
    finally:
        admin.close()
    return f"redis://{name}:pw@127.0.0.1:{server.port}/0"


@pytest.fixture
def acl_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


async def test_a_missing_permission_fails_the_worker_start_naming_it(
    acl_server: RedisServer, make_bus: Callable[..., EventBus], caplog: pytest.LogCaptureFixture
) -> None:
    """Without `client|id` the worker looped on a TypeError; without `xautoclaim` it
    would fail a delivery at a time. The start checks every command it will send
    (Redis >= 7.0; 6.2 cannot be asked, and reports the refusals as they strike)."""
    router = Router()

    @router.subscribe(name="h")
    async def handle(event: Job) -> None: ...

    if await redis_major(acl_server) < 7:
        bus = make_bus(acl_user(acl_server, "w", "~*", "+@all", "-xautoclaim"), "acl")
        caplog.set_level(logging.ERROR, logger="eventbus")
        async with running_worker(bus, router, settings=FAST):
            await wait_for(lambda: "NOPERM" in caplog.text, message="the refusal logged")
        assert "retrying in" in caplog.text
        return
    url = acl_user(acl_server, "w", "~*", "+@all", "-client|id", "-xautoclaim")
    bus = make_bus(url, "acl")
    with pytest.raises(PermissionDenied) as raised:
        async with running_worker(bus, router, settings=FAST):
            pass
    message = str(raised.value)
    assert "client|id" in message and "xautoclaim" in message
    assert "ACL SETUSER w +client|id +xautoclaim" in message


async def test_noperm_during_begin_never_runs_unguarded(
    acl_server: RedisServer, make_bus: Callable[..., EventBus], caplog: pytest.LogCaptureFixture
) -> None:
    """A NOPERM reply was taken for an unreachable store: fail_open ran the handler
    unguarded. A permission revoked while running must not run it at all."""
    url = acl_user(acl_server, "w", "~*", "+@all")
    bus = make_bus(url, "acl")
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="idem", idempotent=True, backoff=0.1, max_attempts=50)
    async def handle(event: Job) -> None:
        handled.append(event.n)

    caplog.set_level(logging.WARNING, logger="eventbus")
    async with running_worker(bus, router, settings=FAST) as worker:
        acl_user(acl_server, "w", "~*", "+@all", "-set")  # the marker's SET is refused
        await bus.publish(Job(n=1))
        stats = worker.consumers[0].stats
        await wait_for(lambda: stats.store_errors >= 2)
        assert handled == []
        assert "claiming an idempotency key (GET, SET)" in caplog.text
        assert "(NOPERM" in caplog.text and "not run" in caplog.text
        assert "unguarded" not in caplog.text
        acl_user(acl_server, "w", "~*", "+@all")  # granted again: it runs
        await wait_for(lambda: handled == [1], timeout=10)


async def redis_major(server: RedisServer) -> int:
    admin = sync_redis.Redis(port=server.port)
    try:
        return int(str(admin.info("server")["redis_version"]).split(".")[0])
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("url_of", "expected"),
    [
        (lambda port: f"redis://w:wrong@127.0.0.1:{port}/0", "refused the login"),
        (lambda port: f"redis://127.0.0.1:{port}/99", "no such database"),
        (lambda port: f"redis://noping:pw@127.0.0.1:{port}/0", "lacks 'ping'"),
    ],
    ids=["wrong-password", "no-such-db", "no-ping"],
)
async def test_refusals_fail_at_once_not_after_the_connect_timeout(
    acl_server: RedisServer,
    make_bus: Callable[..., EventBus],
    url_of: Callable[[int], str],
    expected: str,
) -> None:
    acl_user(acl_server, "w", "~*", "+@all")
    acl_user(acl_server, "noping", "~*", "+@all", "-ping")
    bus = make_bus(url_of(acl_server.port), "acl")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises((ConnectionFailed, PermissionDenied), match=expected):
        await bus.check_connection(timeout=30)
    assert loop.time() - started < 5, "retried a refusal as if Redis were down"


async def test_pending_entries_stay_pending_while_permission_is_missing(
    acl_server: RedisServer, make_bus: Callable[..., EventBus]
) -> None:
    """Losing XACK at run time: the entry is not lost, and the worker does not spin."""
    url = acl_user(acl_server, "w", "~*", "+@all")
    bus = make_bus(url, "acl")
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="h", backoff=0.1)
    async def handle(event: Job) -> None:
        handled.append(event.n)

    async with running_worker(bus, router, settings=FAST):
        acl_user(acl_server, "w", "~*", "+@all", "-xack")
        await bus.publish(Job(n=1))
        await wait_for(lambda: handled == [1])
        errors_before = await error_replies(acl_server)
        await asyncio.sleep(1.5)  # a window to count the refused acks in
        refused = await error_replies(acl_server) - errors_before
        assert refused <= 20, f"{refused} error replies in 1.5 s: the ack is retried hot"
        assert await pending_count(bus, "jobs", "test.h") == 1
        acl_user(acl_server, "w", "~*", "+@all")
        await wait_for(lambda: no_pending(bus, "jobs", "test.h"), timeout=15)


async def error_replies(server: RedisServer) -> int:
    admin = sync_redis.Redis(port=server.port)
    try:
        return int(admin.info("stats")["total_error_replies"])
    finally:
        admin.close()


def effects_router(runs: list[int]) -> Router:
    """One idempotent handler ("test.tx") that records each n it runs and queues
    ``HINCRBY`` of its ``ctx.slot_key("effects")`` hash on its transaction."""
    router = Router()

    @router.subscribe(name="tx", idempotent=True, lease=1, backoff=0.1)
    async def handle(event: Job, ctx: Context) -> None:
        runs.append(event.n)
        ctx.transaction().hincrby(ctx.slot_key("effects"), str(event.n), 1)

    return router


async def test_a_commit_whose_reply_is_lost_applies_once(
    redis_server_factory: Callable[..., RedisServer], make_bus: Callable[..., EventBus]
) -> None:
    """The commit script ran, and the connection died before its reply: the worker
    cannot know; the key's marker settles it (done: the redelivery, if any, is a
    duplicate). Then a second event flows normally on a new connection."""
    server = redis_server_factory()
    direct = make_bus(server.url, "lost")
    runs: list[int] = []
    router = effects_router(runs)

    await direct.redis.script_load(SCRIPTS.idem_tx_commit.source)  # so it runs, not NOSCRIPT
    async with FaultProxy(server.port) as proxy:
        proxy.cut_on(SCRIPTS.idem_tx_commit.sha.encode(), forward=True)
        bus = make_bus(f"redis://127.0.0.1:{proxy.port}/0", "lost")
        async with running_worker(bus, router, settings=FAST) as worker:
            await direct.publish(Job(n=1))
            await wait_for(lambda: runs == [1] and no_pending(direct, "jobs", "test.tx"))
            assert proxy.tripped.is_set()  # the commit ran; its reply was lost
            await direct.publish(Job(n=2))
            await wait_for(lambda: worker.consumers[0].stats.ok == 1, message="event 2")
    effects = await direct.redis.hgetall(f"{direct.keys.stream('jobs')}:app:effects")
    assert effects == {b"1": b"1", b"2": b"1"}
    assert runs == [1, 2]


async def test_redriving_letters_the_worker_did_not_copy_whole(bus: EventBus) -> None:
    """A letter without its payload (too large) is redriven from the original entry,
    whole; one of an entry with thousands of fields is refused with nothing changed
    (its redrive used to delete the letter and then fail to write it back)."""
    from eventbus import inspection

    handled: list[int] = []
    router = Router()

    @router.subscribe(name="redrive", max_attempts=1, backoff=0.05)
    async def handle(event: Job, ctx: Context) -> None:
        handled.append(event.n)
        if len(ctx.envelope.headers) > 100:
            raise RuntimeError("too many headers")

    key = bus.keys.stream("jobs")
    big = '{"n": 1, "pad": "' + "x" * (2 * 1024 * 1024) + '"}'
    many = {f"h:x{i}": "v" for i in range(5000)}
    async with running_worker(bus, router, settings=FAST):
        await bus.redis.xadd(key, {"type": "Job", "data": big})
        await bus.redis.xadd(key, {"type": "Job", "data": '{"n": 2}', **many})
        await wait_for(lambda: len_is(dlq_entries(bus, "jobs"), 2), timeout=15)
    letters = {d.reason: d for d in await inspection.dead_letters(bus, "jobs")}
    assert letters["too_large"].omitted and letters["failed"].omitted
    with pytest.raises(Exception, match="5,003 fields, more than a redrive can write"):
        await inspection.redrive(bus, "jobs", [letters["failed"], letters["too_large"]])
    assert await bus.redis.xlen(bus.keys.dlq("jobs")) == 2  # nothing changed
    [moved] = await inspection.redrive(bus, "jobs", [letters["too_large"]])
    assert moved.new_id is not None
    [(_, fields)] = await bus.redis.xrange(key, moved.new_id, moved.new_id)
    assert fields[b"data"] == big.encode()  # the whole payload, from the original
    assert fields[b"target"] == b"test.redrive"


async def test_a_group_that_would_skip_a_large_entry_skips_it(bus: EventBus) -> None:
    """The size check ran before the type and target checks: a group that takes no Job
    dead-lettered a large Job another group (with a higher limit) handles, and every
    other group dead-lettered a redrive targeted at that one."""
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="big", max_event_bytes=8 * 1024 * 1024)
    async def big(event: Job) -> None:
        handled.append(event.n)

    @router.subscribe(name="small")
    async def small(event: Other) -> None: ...

    key = bus.keys.stream("jobs")
    payload = '{"n": 1, "pad": "' + "x" * (2 * 1024 * 1024) + '"}'
    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.redis.xadd(key, {"type": "Job", "data": payload})
        await bus.redis.xadd(key, {"type": "Other", "data": "{}", "target": "test.big"})
        await wait_for(lambda: handled == [1])
        await wait_for(lambda: all_settled(bus, "jobs", "test.small"))
        skipped = next(c for c in worker.consumers if c.group == "test.small").stats.skipped
    assert await dlq_entries(bus, "jobs") == []
    assert skipped == 2


async def test_a_dead_letter_copies_a_bounded_total(bus: EventBus) -> None:
    """Each field under the limit, twenty of them over it: the letter copied them all
    (18 MB per group). The copy is bounded in total too."""
    router = Router()

    @router.subscribe(name="bounded")
    async def handle(event: Job) -> None: ...

    fields = {f"h:x{i}": "x" * 900_000 for i in range(20)}
    async with running_worker(bus, router, settings=FAST):
        await bus.redis.xadd(bus.keys.stream("jobs"), {"type": "Job", "data": "{}", **fields})
        await wait_for(lambda: len_is(dlq_entries(bus, "jobs"), 1))
        [letter] = await dlq_entries(bus, "jobs")
    assert letter["dlq_reason"] == "too_large"
    assert sum(len(k) + len(v) for k, v in letter.items()) < 2 * 1024 * 1024
    assert "900,000 bytes" in letter["dlq_omitted"]


async def test_a_failed_start_leaves_nothing_running(
    acl_server: RedisServer, make_bus: Callable[..., EventBus]
) -> None:
    """One group could not start (no XGROUP on Redis 6.2, where the start cannot ask the
    ACL first): the others' loops, lease keepers and janitors went on handling events
    after Worker.start had raised."""
    bus = make_bus(acl_user(acl_server, "w", "~*", "+@all", "-xgroup"), "acl")
    router = Router()

    @router.subscribe(name="h")
    async def handle(event: Job) -> None: ...

    with pytest.raises(PermissionDenied, match="xgroup"):
        async with running_worker(bus, router, settings=FAST):
            pass
    alive = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("eventbus-")]
    assert alive == []


async def test_publishing_refuses_more_headers_than_an_entry_takes(bus: EventBus) -> None:
    headers = {f"h{i}": "v" for i in range(5000)}
    with pytest.raises(ConfigurationError, match="at most 1,000"):
        await bus.publish(Job(n=1), headers=headers, key="k")
    assert await bus.redis.xlen(bus.keys.stream("jobs")) == 0


async def test_a_begin_whose_reply_is_lost_is_not_a_takeover(
    redis_server_factory: Callable[..., RedisServer],
    make_bus: Callable[..., EventBus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The claim's script ran and its reply was lost: fail_open ran the handler
    unguarded, and its commit found the key held by its own claim, which it took for
    another consumer's: a false takeover warning, and the handler ran again."""
    server = redis_server_factory()
    direct = make_bus(server.url, "begin")
    runs: list[int] = []
    router = effects_router(runs)

    await direct.redis.script_load(SCRIPTS.idem_begin.source)  # so it runs, not NOSCRIPT
    caplog.set_level(logging.WARNING, logger="eventbus")
    async with FaultProxy(server.port) as proxy:
        proxy.cut_on(SCRIPTS.idem_begin.sha.encode(), forward=True)
        bus = make_bus(f"redis://127.0.0.1:{proxy.port}/0", "begin")
        async with running_worker(bus, router, settings=FAST) as worker:
            await direct.publish(Job(n=1))
            stats = worker.consumers[0].stats
            await wait_for(lambda: stats.ok == 1, message="the commit")
            await wait_for(lambda: no_pending(direct, "jobs", "test.tx"))
            assert proxy.tripped.is_set()
    assert runs == [1]
    assert stats.store_errors == 1
    assert TAKEOVER_WARNING not in caplog.text
    effects = await direct.redis.hgetall(f"{direct.keys.stream('jobs')}:app:effects")
    assert effects == {b"1": b"1"}


async def test_a_transaction_commits_without_command_info_permission(
    acl_server: RedisServer, make_bus: Callable[..., EventBus]
) -> None:
    """The commit asks COMMAND INFO to check each queued command; a user without
    `command|info` (the ACL docs did not grant it) had every transaction refused."""
    bus = make_bus(acl_user(acl_server, "w", "~*", "+@all", "-command"), "acl")
    router = Router()

    @router.subscribe(name="tx", idempotent=True, max_attempts=1)
    async def handle(event: Job, ctx: Context) -> None:
        ctx.transaction().incr(ctx.slot_key("n"))

    async with running_worker(bus, router, settings=FAST) as worker:
        await bus.publish(Job(n=1))
        await wait_for(lambda: worker.consumers[0].stats.ok == 1)
    assert await dlq_entries(bus, "jobs") == []


async def test_a_stop_during_start_lets_running_handlers_finish(bus: EventBus) -> None:
    """A SIGTERM while one group was still starting cancelled the start, and the failed
    start's cleanup stopped everything with no grace: a handler already running in a
    ready group was cancelled. The start is abandoned; the stop keeps its grace."""
    from eventbus.service import serve

    log: list[str] = []
    router = Router()

    @router.subscribe(name="slow")
    async def slow(event: Job) -> None:
        log.append("started")
        await asyncio.sleep(1)
        log.append("finished")

    worker = Worker(bus, router, settings=WorkerSettings(grace=10, reclaim_interval=0.1))
    never_ready = asyncio.Event()
    real_wait_ready = worker.consumers[0].wait_ready

    async def slow_start() -> None:
        await real_wait_ready()
        await bus.publish(Job(n=1))
        await never_ready.wait()  # a second group that takes its time

    worker.consumers[0].wait_ready = slow_start  # type: ignore[method-assign]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve([worker], stop=stop, install_signal_handlers=False))
    await wait_for(lambda: log == ["started"])
    stop.set()
    await asyncio.wait_for(serving, timeout=15)
    assert log == ["started", "finished"]


async def test_a_worker_whose_start_failed_refuses_to_start_again(
    acl_server: RedisServer, make_bus: Callable[..., EventBus]
) -> None:
    bus = make_bus(acl_user(acl_server, "w", "~*", "+@all", "-xgroup"), "acl")
    router = Router()

    @router.subscribe(name="h")
    async def handle(event: Job) -> None: ...

    worker = Worker(bus, router, settings=FAST)
    with pytest.raises(PermissionDenied):
        await worker.start(timeout=10)
    acl_user(acl_server, "w", "~*", "+@all")
    with pytest.raises(ConfigurationError, match="build a new Worker"):
        await worker.start(timeout=10)
