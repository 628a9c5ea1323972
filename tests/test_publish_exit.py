"""A script that ends without closing its publisher: what ``publish_nowait`` buffered is
flushed at exit within the events' deadline, and what cannot be written is reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import redis

from eventbus.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent

SYNC = """
    from eventbus import PublishSettings, SyncPublisher
    from tests.apps.events import Job

    publisher = SyncPublisher.from_url(
        URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
    )
    for i in range(500):
        publisher.publish_nowait(Job(n=i))
    # no close(): the script just ends
"""

ASYNC = """
    import asyncio
    from eventbus import EventBus, PublishSettings
    from tests.apps.events import Job

    async def main() -> None:
        bus = EventBus.from_url(
            URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
        )
        for i in range(500):
            bus.publish_nowait(Job(n=i))
        # no aclose(): asyncio.run ends the loop, cancelling what is left

    asyncio.run(main())
"""

# A bus on a client has no URL to reconnect to at exit: only its loop can flush it.
ASYNC_STARTED = """
    import asyncio
    from eventbus import EventBus, PublishSettings
    from eventbus.connection import make_client
    from tests.apps.events import Job

    async def main() -> None:
        bus = EventBus(
            make_client(URL), service="exit", prefix=PREFIX,
            publishing=PublishSettings(deadline=DEADLINE),
        )
        for i in range(500):
            bus.publish_nowait(Job(n=i))
        await asyncio.sleep(0)  # the flusher starts; then main returns, bus not closed

    asyncio.run(main())
"""

# Used on a loop that then ended: later calls (this thread or another) must not raise.
LOOP_ENDED = """
    import asyncio, threading
    from eventbus import EventBus, PublishSettings
    from tests.apps.events import Job

    bus = EventBus.from_url(
        URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
    )

    async def use() -> None:
        bus.publish_nowait(Job(n=-1))  # the bus adopts this loop (asyncio.run closes it)
        await bus.flush()

    asyncio.run(use())
    for i in range(250):
        assert bus.publish_nowait(Job(n=i))  # was: RuntimeError (no running event loop)

    def more() -> None:
        for i in range(250, 499):
            assert bus.publish_nowait(Job(n=i))  # was: RuntimeError (Event loop is closed)

    thread = threading.Thread(target=more)
    thread.start()
    thread.join()
"""

NO_LOOP = """
    from eventbus import EventBus, PublishSettings
    from tests.apps.events import Job

    bus = EventBus.from_url(
        URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
    )
    for i in range(500):
        bus.publish_nowait(Job(n=i))  # no event loop ever runs the bus
"""


def run_script(template: str, url: str, prefix: str, deadline: float) -> tuple[float, str]:
    code = textwrap.dedent(template)
    header = f"URL = {url!r}\nPREFIX = {prefix!r}\nDEADLINE = {deadline!r}\n"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", header + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    return elapsed, proc.stderr


def stream_length(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(f"{prefix}:{{jobs}}"))
    finally:
        client.close()


def check_all_written(template: str, server: RedisServer, prefix: str) -> None:
    _, stderr = run_script(template, server.url, prefix, deadline=5.0)
    assert stream_length(server.url, prefix) == 500, stderr
    assert "lost" not in stderr and "not written" not in stderr, stderr


def check_lost_are_reported(template: str, server: RedisServer, prefix: str) -> None:
    url = server.url
    server.stop()
    elapsed, stderr = run_script(template, url, prefix, deadline=1.0)
    # interpreter start and imports take about a second here; the flush waits at most
    # for the events' deadline (1 s) and a second of slack
    assert elapsed < 1.0 + 5.0, (elapsed, stderr)
    assert "500 publish_nowait events" in stderr and "lost" in stderr, stderr


def test_sync_publisher_not_closed_flushes_at_exit(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_all_written(SYNC, redis_server_factory(), "sync-exit")


def test_sync_publisher_not_closed_reports_what_it_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_lost_are_reported(SYNC, redis_server_factory(), "sync-lost")


def test_async_bus_not_closed_flushes_when_its_loop_ends(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_all_written(ASYNC, redis_server_factory(), "async-exit")


def test_async_bus_not_closed_reports_what_it_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_lost_are_reported(ASYNC, redis_server_factory(), "async-lost")


def test_async_bus_with_its_flusher_running_flushes_when_its_loop_ends(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_all_written(ASYNC_STARTED, redis_server_factory(), "started-exit")


def test_async_bus_with_its_flusher_running_reports_what_it_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_lost_are_reported(ASYNC_STARTED, redis_server_factory(), "started-lost")


def test_async_bus_never_run_on_a_loop_flushes_at_exit(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_all_written(NO_LOOP, redis_server_factory(), "noloop-exit")


def test_async_bus_never_run_on_a_loop_reports_what_it_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_lost_are_reported(NO_LOOP, redis_server_factory(), "noloop-lost")


def test_async_bus_used_after_its_loop_ended_buffers_and_flushes_at_exit(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    check_all_written(LOOP_ENDED, redis_server_factory(), "ended-exit")


FORKED = """
    import os
    from eventbus import PublishSettings, SyncPublisher
    from tests.apps.events import Job

    publisher = SyncPublisher.from_url(
        URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
    )
    for i in range(500):
        publisher.publish_nowait(Job(n=i))
    if os.fork() == 0:
        # a child with a copy of the buffer, exiting normally: the parent's to write
        raise SystemExit(0)
    os.wait()
"""


def test_a_forked_child_does_not_write_its_copy_of_the_buffer(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    _, stderr = run_script(FORKED, server.url, "forked", deadline=5.0)
    assert stream_length(server.url, "forked") == 500, stderr


ASYNC_CUT_MID_SEND = """
    import asyncio
    from eventbus import EventBus, PublishSettings
    from tests.apps.events import Job

    async def main() -> None:
        bus = EventBus.from_url(
            URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
        )
        for i in range(20_000):
            bus.publish_nowait(Job(n=i))
        await bus.publish(Job(n=-1))  # the flusher is writing batches by now
        await asyncio.sleep(0.05)
        # no aclose(): asyncio.run cancels the flusher in the middle of a batch

    asyncio.run(main())
"""


def test_a_batch_cut_off_mid_send_at_exit_is_not_written_twice(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """The batch in flight when asyncio.run cancelled the flusher was sent again whole,
    though most of it had reached Redis: hundreds of events twice. What it wrote is now
    looked up in the stream first."""
    server = redis_server_factory()
    _, stderr = run_script(ASYNC_CUT_MID_SEND, server.url, "cut", deadline=10.0)
    client = redis.Redis.from_url(server.url)
    try:
        ids = [fields[b"id"] for _, fields in client.xrange("cut:{jobs}")]
    finally:
        client.close()
    assert len(ids) == 20_001, stderr
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} events written twice"


FORKED_CHILD_PUBLISHES = """
    import os
    from eventbus import PublishSettings, SyncPublisher
    from tests.apps.events import Job

    publisher = SyncPublisher.from_url(
        URL, service="exit", prefix=PREFIX, publishing=PublishSettings(deadline=DEADLINE)
    )
    for i in range(20_000):
        publisher.publish_nowait(Job(n=i))
    if os.fork() == 0:
        publisher.publish_nowait(Job(n=-1))  # the child's own event
        publisher.close()
        os._exit(0)
    _, status = os.wait()
    assert status == 0, status
    publisher.close()
"""


def test_a_forked_child_publishes_its_own_events_only(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A child that used its copy of the publisher wrote the parent's buffer again
    (30,500 entries for 20,001 events) and hung in close() on events in flight that no
    thread of its own could settle."""
    server = redis_server_factory()
    _, stderr = run_script(FORKED_CHILD_PUBLISHES, server.url, "forked2", deadline=10.0)
    assert stream_length(server.url, "forked2") == 20_001, stderr
