"""Prometheus metrics: what a scrape reports after real work against a real Redis.

Each test registers a collector in a private registry and scrapes it the way
prometheus_client's HTTP handler does (``generate_latest``, from a thread).
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventbus import EventBus, Router, Worker, WorkerSettings
from eventbus.errors import PublishError
from eventbus.metrics import EventbusCollector
from eventbus.schedules.scheduler import Scheduler
from eventbus.testing import RedisServer, running_worker, wait_for
from eventbus.testing.server import free_port
from tests.apps.events import Beat, Job
from tests.conftest import Processes
from tests.helpers import all_settled, dlq_entries, no_pending, redis_version

FAST = WorkerSettings(grace=5, reclaim_interval=0.1)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(registry: CollectorRegistry) -> Samples:
    text = await asyncio.to_thread(generate_latest, registry)
    return parse(text.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, (
        f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    )
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


COLLECTORS: list[EventbusCollector] = []


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    yield CollectorRegistry()
    while COLLECTORS:
        COLLECTORS.pop().close()  # its Redis connection


def collector_in(registry: CollectorRegistry, bus: EventBus, **kwargs: object) -> EventbusCollector:
    collector = EventbusCollector(bus, **kwargs)  # type: ignore[arg-type]
    registry.register(collector)
    COLLECTORS.append(collector)
    return collector


async def test_a_scrape_reports_publishes_outcomes_and_queue_figures(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    router = Router()

    @router.subscribe(name="ok")
    async def ok(event: Job) -> None:
        return None

    @router.subscribe(name="fails", max_attempts=2, backoff=0.05)
    async def fails(event: Job) -> None:
        if event.n == 3:
            raise ValueError("poison")

    @router.subscribe(name="once", idempotent=True)
    async def once(event: Job) -> None:
        return None

    async with running_worker(bus, router, settings=FAST) as worker:
        collector_in(registry, bus, worker=worker, cache_s=0)
        await bus.publish_many([Job(n=n) for n in range(10)])
        # one logical event published twice: the idempotent group runs it once
        await bus.publish(Job(n=100), key="job-100", dedup_window=0)
        await bus.publish(Job(n=100), key="job-100", dedup_window=0)
        for group in ("test.ok", "test.fails", "test.once"):
            await wait_for(lambda g=group: all_settled(bus, "jobs", g), message=f"{group} done")
        await wait_for(lambda: dlq_entries(bus, "jobs"), message="the dead letter")
        samples = await scrape(registry)

    def handled(group: str, outcome: str) -> float:
        return value(samples, "eventbus_events_handled_total", stream="jobs", group=group,
                     handler=group.split(".")[1], outcome=outcome)  # fmt: skip

    assert value(samples, "eventbus_events_published_total",
                 stream="jobs", type="Job", outcome="ok") == 12  # fmt: skip
    assert value(samples, "eventbus_publish_dropped_total", stream="jobs") == 0
    assert value(samples, "eventbus_publish_buffer_events") == 0
    assert value(samples, "eventbus_publish_duration_seconds_count", method="publish") == 2
    assert value(samples, "eventbus_publish_duration_seconds_count", method="publish_many") == 1

    assert handled("test.ok", "ok") == 12
    assert handled("test.ok", "error") == 0
    assert (handled("test.fails", "ok"), handled("test.fails", "error")) == (11, 1)
    assert handled("test.fails", "dead") == 1
    assert (handled("test.once", "ok"), handled("test.once", "duplicate")) == (11, 1)
    # the retry came back through XAUTOCLAIM
    reclaimed = value(
        samples, "eventbus_messages_reclaimed_total", stream="jobs", group="test.fails"
    )
    assert reclaimed >= 1
    assert value(samples, "eventbus_handler_duration_seconds_count",
                 stream="jobs", group="test.ok", handler="ok") == 12  # fmt: skip
    assert value(samples, "eventbus_handler_duration_seconds_bucket",
                 stream="jobs", group="test.ok", handler="ok", le="+Inf") == 12  # fmt: skip
    assert value(samples, "eventbus_event_age_seconds_count", stream="jobs", group="test.ok") == 12

    # read from Redis at scrape time
    assert value(samples, "eventbus_redis_up") == 1
    assert value(samples, "eventbus_stream_length", stream="jobs") == 12
    assert value(samples, "eventbus_dlq_length", stream="jobs") == 1
    for group in ("test.ok", "test.fails", "test.once"):
        assert value(samples, "eventbus_group_pending", stream="jobs", group=group) == 0
        assert value(samples, "eventbus_group_oldest_pending_seconds",
                     stream="jobs", group=group) == 0  # fmt: skip
        assert value(samples, "eventbus_group_consumers", stream="jobs", group=group) == 1
        assert value(samples, "eventbus_handlers_in_flight", stream="jobs", group=group) == 0
        if await redis_version(bus) >= (7,):
            assert value(samples, "eventbus_group_lag", stream="jobs", group=group) == 0
    if await redis_version(bus) < (7,):
        assert "eventbus_group_lag" not in names(samples)  # unknown on 6.2, not a made-up 0


async def test_pending_in_flight_and_oldest_pending_age(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    router = Router()

    @router.subscribe(name="slow")
    async def slow(event: Job) -> None:
        started.set()
        await release.wait()

    async with running_worker(bus, router, settings=FAST) as worker:
        collector_in(registry, bus, worker=worker, cache_s=0)
        published_at = time.time()
        await bus.publish(Job(n=1))
        await asyncio.wait_for(started.wait(), 10)

        async def aged() -> Samples | None:
            samples = await scrape(registry)
            age = value(samples, "eventbus_group_oldest_pending_seconds",
                        stream="jobs", group="test.slow")  # fmt: skip
            return samples if age >= 0.3 else None

        samples = await wait_for(aged, message="the pending entry to age")
        assert value(samples, "eventbus_group_pending", stream="jobs", group="test.slow") == 1
        assert value(samples, "eventbus_handlers_in_flight", stream="jobs", group="test.slow") == 1
        age = value(samples, "eventbus_group_oldest_pending_seconds",
                    stream="jobs", group="test.slow")  # fmt: skip
        assert age <= time.time() - published_at + 0.1  # the entry's age, not a made-up figure
        release.set()
        await wait_for(lambda: no_pending(bus, "jobs", "test.slow"))
        samples = await scrape(registry)
    assert value(samples, "eventbus_group_pending", stream="jobs", group="test.slow") == 0
    assert value(samples, "eventbus_group_oldest_pending_seconds",
                 stream="jobs", group="test.slow") == 0  # fmt: skip


async def test_lag_counts_what_a_group_has_not_read(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    lag_known = await redis_version(bus) >= (7,)  # XINFO GROUPS reports lag from Redis 7
    router = Router()

    @router.subscribe(name="later")
    async def later(event: Job) -> None:
        return None

    worker = Worker(bus, router, settings=FAST)
    await worker.start(timeout=30)  # creates the group
    await worker.stop()
    collector_in(registry, bus, worker=worker, cache_s=0)
    await bus.publish_many([Job(n=n) for n in range(5)])
    samples = await scrape(registry)
    if lag_known:
        assert value(samples, "eventbus_group_lag", stream="jobs", group="test.later") == 5
    else:  # unknown on 6.2: absent, never a made-up number
        assert "eventbus_group_lag" not in names(samples)
    assert value(samples, "eventbus_group_consumers", stream="jobs", group="test.later") == 0
    assert value(samples, "eventbus_stream_length", stream="jobs") == 5


async def test_redis_figures_are_cached_between_scrapes(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    collector_in(registry, bus, streams=["jobs"], cache_s=3600)
    await bus.publish(Job(n=1))
    first = await scrape(registry)
    await bus.publish(Job(n=2))
    second = await scrape(registry)
    # the in-process counters are live; the Redis figures come from the cached read
    assert value(second, "eventbus_events_published_total",
                 stream="jobs", type="Job", outcome="ok") == 2  # fmt: skip
    assert value(first, "eventbus_stream_length", stream="jobs") == 1
    assert value(second, "eventbus_stream_length", stream="jobs") == 1

    fresh = CollectorRegistry()
    collector_in(fresh, bus, streams=["jobs"], cache_s=0)
    assert value(await scrape(fresh), "eventbus_stream_length", stream="jobs") == 2


async def test_scrape_answers_when_redis_is_down(
    eventbus_prefix: str, registry: CollectorRegistry
) -> None:
    with RedisServer() as server:
        bus = EventBus.from_url(server.url, service="test", prefix=eventbus_prefix)
        try:
            collector_in(registry, bus, streams=["jobs"], cache_s=0)
            await bus.publish(Job(n=1))
            assert value(await scrape(registry), "eventbus_redis_up") == 1
            # hung (stopped, not dead): the connection is open and nothing answers
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                samples = await scrape(registry)
                assert time.monotonic() - started < 5  # inside Prometheus's scrape timeout
                assert value(samples, "eventbus_redis_up") == 0
            finally:
                server.process.send_signal(signal.SIGCONT)
            await wait_for(lambda: scrape_up(registry), message="the collector to reconnect")
            server.kill()
            started = time.monotonic()
            samples = await scrape(registry)
            assert time.monotonic() - started < 5
            assert value(samples, "eventbus_redis_up") == 0
            assert "eventbus_stream_length" not in names(samples)  # unknown, not a made-up 0
            assert value(samples, "eventbus_events_published_total",
                         stream="jobs", type="Job", outcome="ok") == 1  # fmt: skip
            with pytest.raises(PublishError):
                await bus.publish(Job(n=2))
            assert value(await scrape(registry), "eventbus_events_published_total",
                         stream="jobs", type="Job", outcome="error") == 1  # fmt: skip
            server.start()
            await wait_for(lambda: scrape_up(registry), message="the collector to reconnect")
        finally:
            await bus.aclose()


async def scrape_up(registry: CollectorRegistry) -> bool:
    return value(await scrape(registry), "eventbus_redis_up") == 1


async def test_schedule_fires_and_times(bus: EventBus, registry: CollectorRegistry) -> None:
    router = Router()

    @router.schedule("* * * * * *", name="every-second")
    def beat(tick: object) -> Beat:
        return Beat(tick=str(tick))

    scheduler = Scheduler(bus, router.schedules)
    collector_in(registry, bus, scheduler=scheduler, cache_s=0)
    await scheduler.start()
    try:

        async def fired() -> Samples | None:
            samples = await scrape(registry)
            count = value(samples, "eventbus_schedule_fires_total",
                          schedule="every-second", outcome="fired")  # fmt: skip
            # the counter moves when the events are written, the state hash just after
            recorded = ("eventbus_schedule_last_fire_timestamp_seconds",
                        frozenset({("schedule", "every-second")})) in samples  # fmt: skip
            return samples if count >= 1 and recorded else None

        samples = await wait_for(fired, message="a tick")
    finally:
        await scheduler.stop()
    last = value(samples, "eventbus_schedule_last_fire_timestamp_seconds", schedule="every-second")
    upcoming = value(samples, "eventbus_schedule_next_fire_timestamp_seconds",
                     schedule="every-second")  # fmt: skip
    assert abs(last - time.time()) < 5
    assert upcoming > last
    assert value(samples, "eventbus_schedule_fires_total",
                 schedule="every-second", outcome="error") == 0  # fmt: skip

    # every collector reports the schedules schedulers ran (from the schedule index), so
    # with all schedulers stopped a worker's collector still shows the missed next tick
    workers_only = CollectorRegistry()
    collector_in(workers_only, bus, cache_s=0)
    later = await scrape(workers_only)
    assert value(later, "eventbus_schedule_next_fire_timestamp_seconds",
                 schedule="every-second") >= upcoming  # fmt: skip
    assert ("eventbus_schedule_fires_total", frozenset({("schedule", "every-second"),
            ("outcome", "fired")})) not in later  # fmt: skip


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, str(exc.read().decode(errors="replace"))


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


async def test_scheduler_command_serves_metrics_from_the_environment(
    processes: Processes, eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    port = free_port()
    proc = processes.eventbus(
        "scheduler", "tests.apps.obs_app", "--redis-url", eventbus_redis_url,
        "--prefix", eventbus_prefix, env={"EVENTBUS_METRICS_PORT": str(port)},
    )  # fmt: skip

    async def heartbeat_fired() -> str | None:
        text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
        if text is None:
            return None
        samples = parse(text)
        key = ("eventbus_schedule_fires_total",
               frozenset({"schedule": "heartbeat", "outcome": "fired"}.items()))  # fmt: skip
        return text if samples.get(key, 0) >= 1 else None

    text = await wait_for(heartbeat_fired, timeout=30, message="/metrics with a fired tick")
    assert proc.poll() is None
    assert "eventbus_schedule_last_fire_timestamp_seconds" in text
    assert "eventbus_redis_up 1.0" in text


async def test_metrics_port_in_use_is_a_clear_error(
    processes: Processes, eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = processes.eventbus(
            "run", "tests.apps.obs_app", "--redis-url", eventbus_redis_url,
            "--prefix", eventbus_prefix, "--metrics-port", str(port),
        )  # fmt: skip
        out, _ = await asyncio.to_thread(proc.communicate, None, 30)
    text = out.decode()
    assert proc.returncode == 2, text
    assert f"cannot serve metrics on port {port}" in text and "--metrics-port" in text
    assert "Traceback" not in text


async def test_a_scrape_is_one_round_trip(own_bus: EventBus, registry: CollectorRegistry) -> None:
    bus = own_bus  # SCRIPT FLUSH and the server's command counts: on a server of its own
    collector_in(registry, bus, streams=["jobs", "pings"], cache_s=0)
    await bus.publish(Job(n=1))
    await bus.redis.script_flush()  # a fresh or restarted server: loaded on NOSCRIPT
    assert value(await scrape(registry), "eventbus_stream_length", stream="jobs") == 1
    await bus.redis.config_resetstat()
    samples = await scrape(registry)
    assert value(samples, "eventbus_stream_length", stream="jobs") == 1
    stats = await bus.redis.info("commandstats")
    called = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
    assert called.get("evalsha") == 2  # one script per stream, in one pipeline
    assert not any(name.startswith("script") for name in called)  # no SCRIPT EXISTS


async def test_junk_in_redis_does_not_blank_the_scrape(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    """A group name that is not UTF-8 and a schedule state hash (and index) holding junk:
    the scrape answers 200 over HTTP with everything else, the odd values skipped."""
    from prometheus_client import start_http_server

    await bus.publish(Job(n=1))
    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "good", id="0")
    await bus.redis.xgroup_create(key, b"bad-\xff\xfe", id="0")
    state = {"last_fired_at": "yesterday", "next_tick": "2030-01-01T00:00:00.000000Z"}
    await bus.redis.hset(bus.keys.schedule("junk"), mapping=state)
    await bus.redis.hset(bus.keys.schedule("worse"), mapping={"next_tick": b"\xff\x00"})
    now = time.time()
    await bus.redis.zadd(
        bus.keys.schedule_index(), {"junk": now, "worse": now, b"\xff\xfe-name": now}
    )
    collector_in(registry, bus, streams=["jobs"], cache_s=0)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        for _ in range(2):  # the first scrape learns the index, the second reads it known
            status, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
            assert status == 200, text
            samples = parse(text)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert value(samples, "eventbus_redis_up") == 1
    assert value(samples, "eventbus_stream_length", stream="jobs") == 1
    if await redis_version(bus) >= (7,):  # XINFO GROUPS reports lag from Redis 7
        assert value(samples, "eventbus_group_lag", stream="jobs", group="good") == 1
    else:
        assert ("eventbus_group_lag", frozenset({("stream", "jobs"), ("group", "good")})) not in (
            samples
        )
    assert value(samples, "eventbus_group_pending", stream="jobs", group="good") == 0
    assert value(samples, "eventbus_group_pending", stream="jobs", group="bad-\\xff\\xfe") == 0
    assert (
        value(samples, "eventbus_schedule_next_fire_timestamp_seconds", schedule="junk")
        == 1893456000
    )
    assert (
        "eventbus_schedule_last_fire_timestamp_seconds",
        frozenset({("schedule", "junk")}),
    ) not in samples
