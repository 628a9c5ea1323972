"""Regressions found in review: nothing stranded, nothing lost, nothing resent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import redis

from eventbus import (
    Context,
    EmbeddedServerError,
    Event,
    EventBus,
    PublishError,
    Router,
    Worker,
    WorkerSettings,
)
from eventbus.testing import RedisServer, running_worker, wait_for
from eventbus.worker.groups import is_nogroup
from tests.apps.events import Job
from tests.helpers import FaultProxy, dlq_entries, no_pending

FAST = WorkerSettings(grace=5, reclaim_interval=0.2)


class Picky(Event, stream="picky"):
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise KeyError("n must not be negative")  # not a msgspec validation error


async def test_handler_raising_cancelled_error_is_a_failure(bus: EventBus) -> None:
    """A CancelledError the worker did not cause (e.g. from an inner task) is retried,
    then dead-lettered; it never strands the entry."""
    attempts: list[int] = []
    router = Router()

    @router.subscribe(name="cancels", max_attempts=2, backoff=0.05, lease=1)
    async def handle(event: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        inner = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        inner.cancel()
        await inner  # raises CancelledError into the handler

    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=1))
        await wait_for(lambda: dlq_entries(bus, "jobs"), timeout=10, message="a dead letter")
        await wait_for(lambda: no_pending(bus, "jobs", "test.cancels"))
    [dead] = await dlq_entries(bus, "jobs")
    assert attempts == [1, 2]
    assert dead["dlq_error_type"] == "HandlerCancelled"


async def test_event_validation_errors_are_dead_lettered(bus: EventBus) -> None:
    seen: list[int] = []
    router = Router()

    @router.subscribe(name="picky")
    async def handle(event: Picky) -> None:
        seen.append(event.n)

    async with running_worker(bus, router, settings=FAST):
        await bus.redis.xadd(bus.keys.stream("picky"), {"type": "Picky", "data": '{"n": -1}'})
        await bus.publish(Picky(n=1))
        await wait_for(lambda: seen == [1] and dlq_has_one(bus))
        await wait_for(lambda: no_pending(bus, "picky", "test.picky"))
    [dead] = await dlq_entries(bus, "picky")
    assert dead["dlq_reason"] == "undecodable" and dead["dlq_error_type"] == "KeyError"


async def dlq_has_one(bus: EventBus) -> bool:
    return int(await bus.redis.xlen(bus.keys.dlq("picky"))) == 1


async def test_leases_are_extended_through_the_grace_period(bus: EventBus) -> None:
    calls: list[str] = []
    router = Router()

    @router.subscribe(name="graceful-long", lease=1)
    async def handle(event: Job, ctx: Context) -> None:
        calls.append(ctx.envelope.stream_id)
        await asyncio.sleep(3)  # three leases, all of them during the grace period

    settings = WorkerSettings(grace=10, reclaim_interval=0.1)
    stopping = Worker(bus, router, consumer="stopping", settings=settings)
    await stopping.start()
    async with running_worker(bus, router, consumer="other", settings=settings) as other:
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(calls) == 1)
        await stopping.stop()  # waits for the handler, keeping its lease alive
        assert other.consumers[0].stats.reclaimed == 0
    assert len(calls) == 1
    assert await no_pending(bus, "jobs", "test.graceful-long")


async def test_timed_out_sync_handler_keeps_its_slot(bus: EventBus) -> None:
    """With concurrency 1, a sync handler that outlives its timeout still occupies the
    only thread: the next event waits for it instead of timing out unrun."""
    ran: list[int] = []
    gate = threading.Event()
    router = Router()

    @router.subscribe(name="sync-timeout", concurrency=1, timeout=0.2, max_attempts=3, backoff=0.05)
    def handle(event: Job, ctx: Context) -> None:
        ran.append(event.n)
        if event.n == 1 and ctx.attempt == 1:
            gate.wait(1.5)  # overruns its timeout

    async with running_worker(bus, router, settings=FAST):
        await bus.publish_many([Job(n=1), Job(n=2)])
        await wait_for(lambda: 2 in ran and ran.count(1) >= 2, timeout=15, message=lambda: str(ran))
        await wait_for(lambda: no_pending(bus, "jobs", "test.sync-timeout"))
        gate.set()
    assert await dlq_entries(bus, "jobs") == []


def test_nogroup_is_recognised_inside_script_errors() -> None:
    wrapped = redis.ResponseError(
        "ERR Error running script (call to f_abc): @user_script:1: NOGROUP No such key"
    )
    assert is_nogroup(wrapped)
    assert is_nogroup(redis.ResponseError("NOGROUP No such key 'x' or consumer group 'g'"))
    assert not is_nogroup(redis.ResponseError("BUSY Redis is busy running a script"))


async def test_acks_survive_a_busy_server(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    admin.config_set("lua-time-limit", 100)  # BUSY after 100 ms of script
    bus = EventBus.from_url(server.url, service="busy", prefix="busy")
    runs: list[int] = []
    router = Router()

    def busy_script() -> None:
        spin = (
            "local t = redis.call('TIME') while true do local n = redis.call('TIME') "
            "if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 600000 then break end end"
        )
        redis.Redis(port=server.port).eval(spin, 0)

    @router.subscribe(name="busy", lease=5)
    async def handle(event: Job, ctx: Context) -> None:
        runs.append(ctx.delivery_count)
        if len(runs) == 1:
            threading.Thread(target=busy_script, daemon=True).start()
            await asyncio.sleep(0.3)  # finish while Redis answers BUSY

    try:
        async with running_worker(bus, router, settings=FAST):
            await bus.publish(Job(n=1))
            await wait_for(lambda: runs, timeout=5)
            await wait_for(lambda: settled_despite_busy(bus), timeout=10)
        assert runs == [1]
    finally:
        admin.close()
        await bus.aclose()


async def settled_despite_busy(bus: EventBus) -> bool:
    try:
        return await no_pending(bus, "jobs", "busy.busy")
    except redis.ResponseError:  # BUSY: our own check is refused too, for a moment
        return False


async def test_publish_is_not_resent_when_the_reply_is_lost(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A proxy forwards the XADD and then drops the connection before the reply: the
    publish fails (the caller decides), and the stream holds the event once, not twice."""
    server = redis_server_factory()
    async with FaultProxy(server.port) as proxy:
        proxy.cut_on(b"XADD", forward=True)
        bus = EventBus.from_url(f"redis://127.0.0.1:{proxy.port}/0", service="dup", prefix="dup")
        try:
            with pytest.raises(PublishError):
                await bus.publish(Job(n=1))
            assert redis.Redis(port=server.port).xlen(bus.keys.stream("jobs")) == 1
        finally:
            await bus.aclose()


async def test_entries_deleted_while_pending_are_cleaned_up(bus: EventBus) -> None:
    calls: list[int] = []
    router = Router()

    @router.subscribe(name="ghosts", lease=1)
    async def handle(event: Job) -> None:
        calls.append(event.n)

    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "test.ghosts", id="0", mkstream=True)
    gone = await bus.publish(Job(n=1))
    await bus.redis.xreadgroup("test.ghosts", "crashed", {key: ">"}, count=1)
    await bus.redis.xdel(key, gone)  # trimmed or deleted while pending
    async with running_worker(bus, router, settings=FAST):
        await bus.publish(Job(n=2))
        await wait_for(lambda: calls == [2])
        await wait_for(lambda: no_pending(bus, "jobs", "test.ghosts"), timeout=10)
    assert await dlq_entries(bus, "jobs") == []


async def test_stop_requested_before_start(bus: EventBus) -> None:
    router = Router()

    @router.subscribe(name="early-stop")
    async def handle(event: Job) -> None: ...

    worker = Worker(bus, router)
    worker.request_stop()
    started = time.monotonic()
    await asyncio.wait_for(worker.run(install_signal_handlers=False), timeout=10)
    assert time.monotonic() - started < 5


async def test_publish_after_a_redis_restart_needs_no_retry(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(appendonly=True)
    bus = EventBus.from_url(server.url, service="rs", prefix="rs")
    try:
        await asyncio.gather(*(bus.publish(Job(n=i)) for i in range(8)))  # pool of several
        server.restart()  # every pooled connection is now dead
        ids = await asyncio.gather(*(bus.publish(Job(n=i)) for i in range(8, 16)))
        assert len(ids) == 8
        assert await bus.redis.xlen(bus.keys.stream("jobs")) == 16
    finally:
        await bus.aclose()


@pytest.fixture
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_connections_killed_while_idle_are_replaced(
    redis_server_factory: Callable[..., RedisServer], tls: bool, request: pytest.FixtureRequest
) -> None:
    """CLIENT KILL (or the server's idle timeout, or a failover) closes idle connections;
    the next publish must not fail on one of them, over TCP or TLS."""
    extra: list[str] = []
    url_of: Callable[[RedisServer], str] = lambda s: s.url  # noqa: E731
    if tls:
        cert, key = request.getfixturevalue("tls_files")
        from eventbus.testing.server import free_port

        tls_port = free_port()
        extra = ["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
                 "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]  # fmt: skip
        url_of = lambda s: f"rediss://localhost:{tls_port}/0?ssl_cert_reqs=none"  # noqa: E731
    try:
        server = redis_server_factory(extra_args=extra)
    except EmbeddedServerError:
        if tls:
            pytest.skip("this redis-server was built without TLS")
        raise
    bus = EventBus.from_url(url_of(server), service="kill", prefix="kill")
    admin = redis.Redis(port=server.port)
    try:
        await asyncio.gather(*(bus.publish(Job(n=i)) for i in range(4)))
        admin.client_kill_filter(_type="normal", skipme=True)
        await wait_for(lambda: len(admin.client_list()) == 1)  # only the admin is left
        # the hard case: the event loop has already processed the close (a TLS transport
        # then has no socket left to inspect)
        await wait_for(lambda: all(c._reader.at_eof() for c in bus.wire._idle))
        await bus.publish(Job(n=4))  # no error: the dead connection was replaced
        assert await bus.redis.xlen(bus.keys.stream("jobs")) == 5
    finally:
        admin.close()
        await bus.aclose()


async def test_aclose_while_publishing_leaves_nothing_open(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    bus = EventBus.from_url(server.url, service="close", prefix="close")
    try:
        publishes = [asyncio.ensure_future(bus.publish(Job(n=i))) for i in range(20)]
        await asyncio.sleep(0)
        await bus.aclose()
        await asyncio.gather(*publishes, return_exceptions=True)
        with pytest.raises(PublishError, match="closed"):
            await bus.publish(Job(n=99))
        await wait_for(lambda: len(admin.client_list()) == 1, message="connections closed")
    finally:
        admin.close()
