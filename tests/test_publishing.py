"""Publishing: publish_many's accounting, the idempotent producer, caps and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from eventbus import (
    Context,
    Event,
    EventBus,
    EventTooLarge,
    EventTypeError,
    PublishError,
    PublishManyError,
    PublishSettings,
    Router,
    Stream,
)
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job, Ping
from tests.helpers import reply_cutting_proxy

capped = Stream("capped", maxlen=100)
deduped_briefly = Stream("brief", dedup_window=0.3)


class Capped(Event, stream=capped):
    n: int


class Brief(Event, stream=deduped_briefly):
    n: int


class Blob(Event, stream="blobs"):
    data: str


async def test_publish_many_returns_ids_in_order(bus: EventBus) -> None:
    results = await bus.publish_many([Job(n=i) for i in range(20)] + [Ping(n=1)])
    entries = await bus.redis.xrange(bus.keys.stream("jobs"))
    assert [r for r in results[:20]] == [e[0].decode() for e in entries]
    assert not any(r.duplicate for r in results)
    assert bus.publish_stats.published == 21


async def test_publish_many_says_what_was_refused(bus: EventBus) -> None:
    await bus.redis.set(bus.keys.stream("pings"), "not a stream")  # XADD there fails
    with pytest.raises(PublishManyError) as info:
        await bus.publish_many([Job(n=0), Ping(n=1), Job(n=2)])
    err = info.value
    assert err.written == [0, 2] and list(err.failed) == [1] and err.unknown == []
    assert "WRONGTYPE" in str(err.failed[1])
    assert "2 of 3 events written, 1 refused by Redis" in str(err)
    assert await bus.redis.xlen(bus.keys.stream("jobs")) == 2


async def test_publish_many_says_what_is_unknown_when_replies_are_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    async with reply_cutting_proxy(server.port, marker=b"XADD", keep_replies=3) as port:
        bus = EventBus.from_url(f"redis://127.0.0.1:{port}/0", service="cut", prefix="cut")
        try:
            with pytest.raises(PublishManyError) as info:
                await bus.publish_many([Job(n=i) for i in range(10)])
        finally:
            await bus.aclose()
    err = info.value
    assert err.written == [0, 1, 2]
    assert err.unknown == list(range(3, 10)) and err.failed == {}
    assert "7 of unknown outcome" in str(err)


async def test_idempotent_producer_writes_once_per_key(bus: EventBus) -> None:
    first = await bus.publish(Job(n=1), key="order-17")
    again = await bus.publish(Job(n=1), key="order-17")
    other = await bus.publish(Job(n=2), key="order-18")
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert again == first and other != first
    assert await bus.redis.xlen(bus.keys.stream("jobs")) == 2
    marker = bus.keys.pub("jobs", "order-17")
    assert marker == f"{bus.keys.prefix}:{{jobs}}:pub:order-17"  # same slot as the stream
    assert 0 < await bus.redis.pttl(marker) <= 600_000  # the default window, 10 min
    assert bus.publish_stats.duplicates == 1


async def test_many_concurrent_publishers_of_one_key_write_one_entry(
    eventbus_redis_url: str, eventbus_prefix: str, make_bus: Callable[..., EventBus]
) -> None:
    buses = [make_bus(eventbus_redis_url, eventbus_prefix, f"svc{i}") for i in range(5)]
    results = await asyncio.gather(
        *(b.publish(Job(n=7), key="once") for b in buses for _ in range(20))
    )
    assert len(set(results)) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await buses[0].redis.xlen(buses[0].keys.stream("jobs")) == 1


async def test_dedup_window_expires(bus: EventBus) -> None:
    first = await bus.publish(Brief(n=1), key="k")  # the stream's window: 0.3 s
    assert (await bus.publish(Brief(n=1), key="k")).duplicate
    marker = bus.keys.pub("brief", "k")
    await wait_for(lambda: expired(bus, marker), message="the dedup marker to expire")
    later = await bus.publish(Brief(n=1), key="k")
    assert not later.duplicate and later != first
    # per call: a window of 0 turns dedup off
    a = await bus.publish(Job(n=1), key="k2", dedup_window=0)
    b = await bus.publish(Job(n=1), key="k2", dedup_window=0)
    assert a != b and not b.duplicate


async def expired(bus: EventBus, key: str) -> bool:
    return not await bus.redis.exists(key)


async def test_dedup_survives_a_script_cache_flush(own_bus: EventBus) -> None:
    bus = own_bus  # SCRIPT FLUSH: on a server of its own
    await bus.publish(Job(n=1), key="before")
    await bus.redis.script_flush()  # as after a Redis restart
    assert not (await bus.publish(Job(n=2), key="after")).duplicate
    assert (await bus.publish(Job(n=2), key="after")).duplicate
    results = await bus.publish_many([Job(n=3), Job(n=4)], keys=["m1", "m1"])
    assert [r.duplicate for r in results] == [False, True]


async def test_keyed_events_are_consumed_with_their_key(bus: EventBus) -> None:
    keys: list[str | None] = []
    router = Router()

    @router.subscribe(name="keyed")
    async def handle(event: Job, ctx: Context) -> None:
        keys.append(ctx.key)

    async with running_worker(bus, router):
        await bus.publish(Job(n=1), key="a")
        await bus.publish(Job(n=1), key="a")
        await wait_for(lambda: keys == ["a"])


async def test_maxlen_caps_the_stream(bus: EventBus) -> None:
    for start in range(0, 1000, 100):
        await bus.publish_many([Capped(n=i) for i in range(start, start + 100)])
    length = await bus.redis.xlen(bus.keys.stream("capped"))
    assert 100 <= length < 1000  # approximate: whole nodes are trimmed
    await bus.publish(Capped(n=1), key="capped-dedup")  # the script honours the cap too
    assert await bus.redis.xlen(bus.keys.stream("capped")) < 1000


async def test_bus_overrides_declared_stream_settings(
    eventbus_redis_url: str, eventbus_prefix: str, make_bus: Callable[..., EventBus]
) -> None:
    capped = [Stream("capped", maxlen=10_000)]
    bus = make_bus(eventbus_redis_url, eventbus_prefix, service="s", streams=capped)
    assert bus.streams.get("capped").maxlen == 10_000
    assert bus.streams.get("brief").dedup_window_s == 0.3  # declared by the event class
    assert bus.streams.get("jobs").maxlen is None  # defaults


async def test_oversized_and_invalid_events_write_nothing(
    eventbus_redis_url: str, eventbus_prefix: str, make_bus: Callable[..., EventBus]
) -> None:
    limit = PublishSettings(max_event_bytes=1000)
    bus = make_bus(eventbus_redis_url, eventbus_prefix, service="s", publishing=limit)
    await bus.publish(Blob(data="x" * 900))
    with pytest.raises(EventTooLarge, match="over the limit of 1,000 bytes"):
        await bus.publish(Blob(data="x" * 2000))
    with pytest.raises(EventTooLarge):
        await bus.publish_many([Blob(data="small"), Blob(data="x" * 2000)])
    with pytest.raises(EventTooLarge):
        bus.publish_nowait(Blob(data="x" * 2000))
    with pytest.raises(EventTypeError):
        bus.publish_nowait("not an event")  # type: ignore[arg-type]
    assert await bus.flush(timeout=5)
    assert await bus.redis.xlen(bus.keys.stream("blobs")) == 1
    assert isinstance(EventTooLarge("x"), PublishError)


def test_default_size_limit_is_one_mib() -> None:
    assert PublishSettings().max_event_bytes == 1024 * 1024


def test_size_limit_counts_key_and_headers() -> None:
    from eventbus.keys import Keys
    from eventbus.publishing.core import PublishCore

    core = PublishCore(keys=Keys("p"), service="s", max_event_bytes=200)
    core.prepare(Job(n=1), headers={"h": "x" * 100})
    with pytest.raises(EventTooLarge, match="with its key and headers"):
        core.prepare(Job(n=1), headers={"h": "x" * 300})
    with pytest.raises(EventTooLarge):
        core.prepare(Job(n=1), key="k" * 300)


def test_batch_protocol_accounts_for_every_item() -> None:
    """The sans-IO protocol on its own, fed replies by hand: NOSCRIPT items are resent
    after a SCRIPT LOAD; if that second request cannot be sent, only they are marked
    not written, and what the first round wrote is kept."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError

    from eventbus.keys import Keys
    from eventbus.publishing.batch import send_batch
    from eventbus.publishing.core import PublishCore, PublishResult

    core = PublishCore(keys=Keys("p"), service="s")
    items = [core.prepare(Job(n=0)), core.prepare(Job(n=1), key="k"), core.prepare(Job(n=2))]
    protocol = send_batch(items)
    payload, count = next(protocol)
    assert count == 3 and payload.count(b"XADD") == 2 and b"EVALSHA" in payload
    payload, count = protocol.send([b"1-0", NoScriptError("NOSCRIPT"), b"1-2"])
    assert count == 2 and payload.startswith(b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD")
    with pytest.raises(StopIteration) as done:
        protocol.throw(RedisConnectionError("refused"))
    outcomes = done.value.value
    assert outcomes[0] == "1-0" and outcomes[2] == "1-2"
    assert isinstance(outcomes[0], PublishResult)
    assert isinstance(outcomes[1], RedisConnectionError)
    # and in the first round, an error before sending means nothing was written: raised
    first = send_batch(items)
    next(first)
    with pytest.raises(RedisConnectionError):
        first.throw(RedisConnectionError("refused"))


async def test_an_error_without_a_message_is_named_by_its_type(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a transport failure carrying no text (str(exc) == ""): the message names its type
    async def fail(payload: bytes, replies: int) -> list[object]:
        raise ConnectionResetError

    monkeypatch.setattr(bus.wire, "request", fail)
    with pytest.raises(PublishError, match=r"failed: ConnectionResetError$"):
        await bus.publish(Job(n=1))
    with pytest.raises(PublishError, match=r"failed: ConnectionResetError$"):
        await bus.publish_many([Job(n=1), Job(n=2)])
