"""Fault tests with real processes: SIGKILLed workers, crashed and restarted Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from eventbus import EventBus, PublishError
from eventbus.testing import RedisServer, wait_for
from tests.apps.events import Job
from tests.conftest import Processes, output_of
from tests.helpers import dlq_entries, no_pending

GROUP = "tests.recorder"  # `eventbus run tests.apps.recorder`: service "tests"
pytestmark = pytest.mark.timeout(120)


def start_app(
    processes: Processes, app: str, url: str, prefix: str, consumer: str, env: dict[str, str]
) -> object:
    """`eventbus run <app>`; `env` {"delay": "0.05"} sets RECORDER_DELAY for the recorder."""
    env_prefix = {"tests.apps.recorder": "RECORDER_", "tests.apps.idem_app": "IDEM_"}[app]
    return processes.eventbus(
        "run", app,
        "--redis-url", url, "--prefix", prefix, "--consumer", consumer, "--grace", "5",
        env={f"{env_prefix}{k.upper()}": v for k, v in env.items()},
    )  # fmt: skip


def start_worker(processes: Processes, url: str, prefix: str, consumer: str, **env: str) -> object:
    return start_app(processes, "tests.apps.recorder", url, prefix, consumer, env)


async def group_exists(bus: EventBus, group: str = GROUP) -> bool:
    try:
        groups = await bus.redis.xinfo_groups(bus.keys.stream("jobs"))
    except Exception:
        return False
    return any(g["name"].decode() == group for g in groups)


async def done_count(bus: EventBus) -> int:
    return int(await bus.redis.scard(f"{bus.keys.prefix}:done"))


async def test_sigkilled_worker_mid_batch_loses_nothing(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    lease = 2.0
    first = start_worker(
        processes, eventbus_redis_url, eventbus_prefix, "doomed", delay="0.05", lease=str(lease)
    )
    await wait_for(lambda: group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(200)])
    await wait_for(lambda: done_count_at_least(bus, 30), timeout=20, message="progress")
    first.kill()  # type: ignore[attr-defined]
    first.wait()  # type: ignore[attr-defined]
    killed_at = time.monotonic()
    done_at_kill = await done_count(bus)
    assert done_at_kill < 200, "the first worker finished before it could be killed"
    start_worker(processes, eventbus_redis_url, eventbus_prefix, "rescuer", lease=str(lease))
    await wait_for(
        lambda: done_count_at_least(bus, 200), timeout=lease + 15, message="all 200 done"
    )
    elapsed = time.monotonic() - killed_at
    assert elapsed < lease + 10, f"took {elapsed:.1f}s after the kill"
    await wait_for(lambda: no_pending(bus, "jobs", GROUP), timeout=10)
    calls = {
        int(k): int(v) for k, v in (await bus.redis.hgetall(f"{eventbus_prefix}:calls")).items()
    }
    assert sorted(calls) == list(range(200))
    # what was in flight at the kill ran again in the rescuer
    assert any(v >= 2 for v in calls.values())


async def done_count_at_least(bus: EventBus, n: int) -> bool:
    return await done_count(bus) >= n


async def test_redis_crash_and_restart_with_aof_loses_nothing(
    redis_server_factory: Callable[..., RedisServer],
    processes: Processes,
    make_bus: Callable[..., EventBus],
) -> None:
    server = redis_server_factory(appendonly=True)
    bus = make_bus(server.url, "crash")
    start_worker(processes, server.url, "crash", "survivor", delay="0.01")
    await wait_for(lambda: group_exists(bus), timeout=20, message="worker start")
    for n in range(300):
        if n == 100:
            server.kill()  # SIGKILL: a crash, not a shutdown
            await asyncio.sleep(0.5)
            server.start()
        await publish_with_retry(bus, Job(n=n))
    await wait_for(lambda: done_count_at_least(bus, 300), timeout=40, message="all 300 done")
    await wait_for(lambda: no_pending(bus, "jobs", GROUP), timeout=10)


async def publish_with_retry(bus: EventBus, event: Job) -> None:
    for _ in range(200):
        try:
            await bus.publish(event)
            return
        except PublishError:
            await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


async def test_poison_that_crashes_the_process_is_dead_lettered(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    """Job 5 kills the worker each time it is handled. A supervisor restarts the
    worker; the delivery count kept in Redis stops the loop after max_attempts."""
    # concurrency 1: a crash also costs an attempt to every other entry in flight
    # (docs/delivery.md), which this test keeps out of the picture
    env = {"crash_on": "5", "max_attempts": "2", "lease": "1", "concurrency": "1"}
    worker = start_worker(processes, eventbus_redis_url, eventbus_prefix, "w0", **env)
    await wait_for(lambda: group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(10)])
    restarts = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await dlq_entries(bus, "jobs"):
        assert loop.time() < deadline, "job 5 never reached the dead-letter stream"
        if worker.poll() is not None:  # type: ignore[attr-defined]
            assert worker.returncode == 17  # type: ignore[attr-defined]
            restarts += 1
            worker = start_worker(
                processes, eventbus_redis_url, eventbus_prefix, f"w{restarts}", **env
            )
        await asyncio.sleep(0.1)
    [dead] = await dlq_entries(bus, "jobs")
    assert dead["dlq_reason"] == "attempts_exhausted"
    assert dead["data"] == '{"n":5,"payload":""}'
    assert restarts == 2
    await wait_for(lambda: done_count_at_least(bus, 9), timeout=20)
    assert not await bus.redis.sismember(f"{eventbus_prefix}:done", 5)
    await wait_for(lambda: no_pending(bus, "jobs", GROUP), timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_worker_process_stops_gracefully_on_signal(
    eventbus_redis_url: str,
    eventbus_prefix: str,
    processes: Processes,
    bus: EventBus,
    sig: signal.Signals,
) -> None:
    worker = start_worker(processes, eventbus_redis_url, eventbus_prefix, "graceful", delay="0.3")
    await wait_for(lambda: group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(50)])
    await wait_for(lambda: done_count_at_least(bus, 1), timeout=20)
    worker.send_signal(sig)  # type: ignore[attr-defined]
    assert await asyncio.to_thread(worker.wait, 15) == 0  # type: ignore[attr-defined]
    log = output_of(worker)  # type: ignore[arg-type]
    assert "stopping" in log and "worker graceful stopped" in log
    assert "Traceback" not in log
    # in-flight handlers finished within the grace: nothing is left pending
    assert await no_pending(bus, "jobs", GROUP)
    consumers = await bus.redis.xinfo_consumers(bus.keys.stream("jobs"), GROUP)
    assert consumers == []  # it owned nothing, so it deleted itself


IDEM_GROUP = "tests.exactly-once"


def start_idem_worker(
    processes: Processes, url: str, prefix: str, consumer: str, **env: str
) -> object:
    return start_app(processes, "tests.apps.idem_app", url, prefix, consumer, env)


async def idem_group_exists(bus: EventBus) -> bool:
    return await group_exists(bus, IDEM_GROUP)


async def consumer_reads(bus: EventBus, group: str, consumer: str) -> bool:
    """The consumer is in the group: its process is up and reading."""
    consumers = await bus.redis.xinfo_consumers(bus.keys.stream("jobs"), group)
    return any(c["name"].decode() == consumer for c in consumers)


async def effects(bus: EventBus) -> dict[int, int]:
    raw = await bus.redis.hgetall(f"{bus.keys.prefix}:effects")
    return {int(k): int(v) for k, v in raw.items()}


async def all_effects(bus: EventBus, n: int) -> bool:
    return len(await effects(bus)) == n


async def effects_at_least(bus: EventBus, n: int) -> bool:
    return len(await effects(bus)) >= n


async def test_sigkill_mid_handler_is_handled_again_exactly_once(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    first = start_idem_worker(
        processes, eventbus_redis_url, eventbus_prefix, "doomed", delay="0.3", lease="1"
    )
    await wait_for(lambda: idem_group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(20)], keys=[f"job-{i}" for i in range(20)])
    await wait_for(lambda: some_calls(bus), timeout=20)
    first.kill()  # type: ignore[attr-defined]  # mid-handler: queued writes die with it
    first.wait()  # type: ignore[attr-defined]
    start_idem_worker(processes, eventbus_redis_url, eventbus_prefix, "rescuer", lease="1")
    await wait_for(lambda: all_effects(bus, 20), timeout=30, message="all 20 effects")
    await wait_for(lambda: no_pending(bus, "jobs", IDEM_GROUP), timeout=10)
    assert await effects(bus) == {i: 1 for i in range(20)}  # exactly once each
    calls = {
        int(k): int(v) for k, v in (await bus.redis.hgetall(f"{eventbus_prefix}:calls")).items()
    }
    assert any(v >= 2 for v in calls.values())  # the interrupted ones ran again


async def some_calls(bus: EventBus) -> bool:
    return bool(await bus.redis.hlen(f"{bus.keys.prefix}:calls"))


async def test_exactly_once_through_repeated_sigkills(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    """Workers are killed at arbitrary moments, over and over (before, during and right
    after handlers, between a commit and its reply...) while 150 events are processed:
    every effect is applied exactly once."""
    import random

    rng = random.Random(7)
    worker = start_idem_worker(
        processes, eventbus_redis_url, eventbus_prefix, "c0", delay="0.02", lease="1"
    )
    await wait_for(lambda: idem_group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(150)])
    kills = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while not await all_effects(bus, 150):
        assert loop.time() < deadline, f"only {len(await effects(bus))} effects after {kills} kills"
        # the chaos: kill at a random moment of its work, measured in work done, not in
        # time (its start-up alone can outlast a timed delay on a loaded machine, and a
        # fast machine can finish everything within one: either way a kill tests less)
        up = f"c{kills}"
        await wait_for(lambda c=up: consumer_reads(bus, IDEM_GROUP, c), timeout=20)
        target = min(150, len(await effects(bus)) + rng.randint(5, 35))
        await wait_for(lambda t=target: effects_at_least(bus, t), timeout=30)
        await asyncio.sleep(rng.uniform(0.0, 0.05))  # mid-batch: others are running
        worker.kill()  # type: ignore[attr-defined]
        worker.wait()  # type: ignore[attr-defined]
        kills += 1
        worker = start_idem_worker(
            processes, eventbus_redis_url, eventbus_prefix, f"c{kills}", delay="0.02", lease="1"
        )
    await wait_for(lambda: no_pending(bus, "jobs", IDEM_GROUP), timeout=20)
    assert kills >= 3
    assert await effects(bus) == {i: 1 for i in range(150)}


@pytest.mark.parametrize(("mode", "expected"), [("tx", 1), ("plain", 2)])
async def test_killed_after_success_before_the_ack(
    eventbus_redis_url: str,
    eventbus_prefix: str,
    processes: Processes,
    bus: EventBus,
    mode: str,
    expected: int,
) -> None:
    """The handler finishes its work and the worker dies before it can commit and ack.
    Transactional: the queued write died with it, the redelivery applies it: once.
    Key-based only: the write was already made, the redelivery makes it again: twice
    (the documented limit of key-based idempotency; docs/idempotency.md)."""
    env = {"mode": mode, "exit_after": "3", "lease": "1"}
    worker = start_idem_worker(processes, eventbus_redis_url, eventbus_prefix, "w0", **env)
    await wait_for(lambda: idem_group_exists(bus), timeout=20, message="worker start")
    await bus.publish_many([Job(n=i) for i in range(6)])
    assert await asyncio.to_thread(worker.wait, 20) == 9  # type: ignore[attr-defined]
    start_idem_worker(processes, eventbus_redis_url, eventbus_prefix, "w1", **env)
    await wait_for(lambda: all_effects(bus, 6), timeout=30)
    await wait_for(lambda: no_pending(bus, "jobs", IDEM_GROUP), timeout=10)
    applied = await effects(bus)
    assert applied[3] == expected
    if mode == "tx":  # and nothing else in flight at the crash was applied twice either
        assert applied == {i: 1 for i in range(6)}


async def test_a_second_signal_stops_at_once_and_cleanly(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    worker = processes.eventbus(
        "run", "tests.apps.recorder", "--redis-url", eventbus_redis_url,
        "--prefix", eventbus_prefix, "--grace", "60",
        env={"RECORDER_DELAY": "60"},
    )  # fmt: skip
    await wait_for(lambda: group_exists(bus), timeout=20, message="worker start")
    await bus.publish(Job(n=1))
    await wait_for(lambda: bus.redis.hlen(f"{eventbus_prefix}:calls"), timeout=20)
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # the first signal: it waits for the handler (up to 60 s)...
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)  # ...the second: stop now, releasing it
    assert await asyncio.to_thread(worker.wait, 15) == 0
    log = output_of(worker)
    assert "again: stopping now" in log and "Traceback" not in log
    # released, claimable at once by whoever comes next, its attempt not spent
    [entry] = await bus.redis.xpending_range(bus.keys.stream("jobs"), GROUP, "-", "+", 10)
    assert entry["times_delivered"] == 0
