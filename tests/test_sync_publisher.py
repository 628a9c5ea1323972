"""The synchronous publisher: same envelope, same dedup, thread-safe, flusher thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from eventbus import (
    BufferFull,
    Context,
    EventBus,
    PublishManyError,
    PublishSettings,
    Router,
    SyncPublisher,
)
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job, Ping


@pytest.fixture
def publisher(eventbus_redis_url: str, eventbus_prefix: str) -> SyncPublisher:
    pub = SyncPublisher.from_url(eventbus_redis_url, service="web", prefix=eventbus_prefix)
    yield pub  # type: ignore[misc]
    pub.close()


async def test_events_from_sync_code_reach_async_handlers(
    publisher: SyncPublisher, bus: EventBus
) -> None:
    seen: list[tuple[int, str | None, str | None]] = []
    router = Router()

    @router.subscribe(name="from-sync")
    async def handle(event: Job, ctx: Context) -> None:
        seen.append((event.n, ctx.source, ctx.key))

    async with running_worker(bus, router):
        publisher.publish(Job(n=1), key="j1", headers={"h": "v"})
        publisher.publish_many([Job(n=2), Job(n=3)])
        publisher.publish_nowait(Job(n=4))
        assert publisher.flush(timeout=10)
        await wait_for(lambda: len(seen) == 4)
    assert sorted(seen) == [(1, "web", "j1"), (2, "web", None), (3, "web", None), (4, "web", None)]


async def test_dedup_is_shared_with_the_async_bus(publisher: SyncPublisher, bus: EventBus) -> None:
    first = publisher.publish(Job(n=1), key="shared")
    again = await bus.publish(Job(n=1), key="shared")
    assert again == first and again.duplicate
    assert publisher.publish(Job(n=1), key="shared").duplicate
    assert await bus.redis.xlen(bus.keys.stream("jobs")) == 1


async def test_thread_safe_under_many_threads(publisher: SyncPublisher, bus: EventBus) -> None:
    def work(t: int) -> None:
        for i in range(100):
            publisher.publish_nowait(Job(n=t * 1000 + i))
        publisher.publish(Ping(n=t))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert publisher.flush(timeout=30)
    assert await bus.redis.xlen(bus.keys.stream("jobs")) == 800
    assert await bus.redis.xlen(bus.keys.stream("pings")) == 8
    assert publisher.publish_stats.published == 808


async def test_publish_many_reports_refusals(publisher: SyncPublisher, bus: EventBus) -> None:
    await bus.redis.set(bus.keys.stream("pings"), "not a stream")
    with pytest.raises(PublishManyError) as info:
        publisher.publish_many([Job(n=0), Ping(n=1)])
    assert info.value.written == [0] and list(info.value.failed) == [1]


def test_block_overflow_waits_in_threads(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(appendonly=True)
    pub = SyncPublisher.from_url(
        server.url,
        service="blk",
        prefix="blk",
        publishing=PublishSettings(buffer_size=3, overflow="block", deadline=30),
    )
    try:
        pub.publish(Job(n=-1))
        server.stop()
        for i in range(3):
            pub.publish_nowait(Job(n=i))
        with pytest.raises(BufferFull, match=r"stayed full for 0\.2s"):
            pub.publish_nowait(Job(n=3), block_timeout=0.2)
        server.start()
        assert pub.publish_nowait(Job(n=4), block_timeout=20)  # waits for room, then accepted
        assert pub.flush(timeout=20)
    finally:
        pub.close()
    import redis

    client = redis.Redis(port=server.port)
    try:
        assert client.xlen("blk:{jobs}") == 5
    finally:
        client.close()


def test_close_flushes_and_later_use_fails(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    import redis

    from eventbus import PublishError

    with SyncPublisher.from_url(eventbus_redis_url, service="c", prefix=eventbus_prefix) as pub:
        for i in range(200):
            pub.publish_nowait(Job(n=i))
    with pytest.raises(PublishError, match="closed"):
        pub.publish(Job(n=1))
    client = redis.Redis.from_url(eventbus_redis_url)
    try:
        assert client.xlen(f"{eventbus_prefix}:{{jobs}}") == 200
    finally:
        client.close()


def test_close_closes_every_connection(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    try:
        publisher = SyncPublisher.from_url(server.url, service="test", prefix="closing")
        publisher.publish(Ping(n=1))
        publisher.publish_nowait(Ping(n=2))
        assert publisher.flush(10)
        assert len(admin.client_list()) > 1  # ours, besides the admin's
        publisher.close()
        # the server notices a closed connection on its next event-loop turn: wait
        deadline = time.monotonic() + 10
        while len(admin.client_list()) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [c["id"] for c in admin.client_list()] == [str(admin.client_id())]
    finally:
        admin.close()
