"""Schedule faults: replicas as real processes, one killed (in real time), and schedulers
down for three ticks (in-process, on a fake clock)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest

from eventbus import EventBus, Router
from eventbus.schedules.scheduler import Scheduler, parse_iso
from eventbus.testing import unique_prefix, wait_for
from eventbus.testing.clock import FakeClock
from tests.apps.events import Beat
from tests.conftest import Processes

pytestmark = pytest.mark.timeout(120)


def start_scheduler(processes: Processes, url: str, prefix: str, **env: str) -> object:
    return processes.eventbus(
        "scheduler", "tests.apps.sched_app", "--redis-url", url, "--prefix", prefix,
        env={f"SCHED_{k.upper()}": v for k, v in env.items()},
    )  # fmt: skip


async def beat_ticks(bus: EventBus) -> list[datetime]:
    entries = await bus.redis.xrange(bus.keys.stream("beats"))
    return [datetime.fromisoformat(json.loads(f[b"data"])["tick"]) for _, f in entries]


async def at_least(bus: EventBus, n: int) -> bool:
    return len(await beat_ticks(bus)) >= n


async def test_three_replicas_each_tick_once_even_when_one_is_killed(
    eventbus_redis_url: str, eventbus_prefix: str, processes: Processes, bus: EventBus
) -> None:
    replicas = [start_scheduler(processes, eventbus_redis_url, eventbus_prefix) for _ in range(3)]
    await wait_for(lambda: at_least(bus, 5), timeout=30, message="5 ticks")
    replicas[0].kill()  # type: ignore[attr-defined]  # mid-run, no goodbye
    replicas[0].wait()  # type: ignore[attr-defined]
    await wait_for(lambda: at_least(bus, 11), timeout=30, message="11 ticks")
    for replica in replicas[1:]:
        replica.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    for replica in replicas[1:]:
        assert await asyncio.to_thread(replica.wait, 15) == 0  # type: ignore[attr-defined]
    ticks = await beat_ticks(bus)
    assert len(ticks) == len(set(ticks)) >= 11  # each tick once...
    assert all(
        b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks)
    )  # ...none missed
    state = await bus.redis.hgetall(bus.keys.schedule("beat"))
    # the counters are best effort: a replica killed between writing a tick's event and
    # recording it leaves that one fire uncounted (the others saw a duplicate)
    assert len(ticks) - 1 <= int(state[b"fires"]) <= len(ticks)
    assert int(state[b"duplicates"]) >= len(ticks)  # the other replicas' publishes


def beat_router(misfire: str) -> Router:
    """tests.apps.sched_app's router with SCHED_SPEC="*/4 * * * * *" and SCHED_MISFIRE."""
    router = Router()

    @router.schedule("*/4 * * * * *", name="beat", misfire=misfire, misfire_grace=60)  # type: ignore[arg-type]
    def beat(tick: datetime) -> Beat:
        return Beat(tick=tick.isoformat())

    return router


async def test_down_for_three_ticks_then_up_with_each_misfire_policy(
    eventbus_redis_url: str, make_bus: Callable[..., EventBus]
) -> None:
    # in-process, on a fake clock: the schedulers stopped between two ticks as a SIGKILL
    # would stop them (asleep, with nothing to say goodbye), then down for three ticks
    policies = {"skip": 0, "once": 1, "all": 3}
    buses = {p: make_bus(eventbus_redis_url, unique_prefix(f"mf{p}")) for p in policies}
    now = datetime.now(UTC)
    clock = FakeClock(
        now.replace(microsecond=500_000) - timedelta(seconds=now.second % 4)
    )  # 0.5 s into a period
    async with AsyncExitStack() as running:
        for p, bus in buses.items():
            await running.enter_async_context(Scheduler(bus, beat_router(p).schedules, clock=clock))
        await clock.sleeping(len(policies))
        await clock.advance(8)
        for bus in buses.values():
            await wait_for(lambda b=bus: at_least(b, 2), timeout=30, message="2 ticks")
        await clock.advance(1.5)
        assert mid_period(clock.now(), 4)  # kill all between two ticks
    last = {
        p: parse_iso(await b.redis.hget(b.keys.schedule("beat"), "last_tick"))
        for p, b in buses.items()
    }
    assert len(set(last.values())) == 1  # all three were killed after the same tick
    [last_tick] = set(last.values())
    # down for three ticks (+4, +8, +12 s), restarted 1.5 s after the third, so that it
    # looks 2-2.5 s after it: late, not on time
    restart_at = last_tick + timedelta(seconds=13.5)
    await clock.advance_to(restart_at)
    async with AsyncExitStack() as running:
        for p, bus in buses.items():
            await running.enter_async_context(Scheduler(bus, beat_router(p).schedules, clock=clock))
        window_end = last_tick + timedelta(seconds=12)
        for bus in buses.values():
            await wait_for(lambda b=bus: handled_through(b, window_end), timeout=30)
        for p, bus in buses.items():
            caught_up = [t for t in await beat_ticks(bus) if last_tick < t <= window_end]
            assert len(caught_up) == policies[p], (p, caught_up)


def mid_period(now: datetime, period: int) -> bool:
    return 1.5 <= now.second % period + now.microsecond / 1e6 < 2.5


async def handled_through(bus: EventBus, tick: datetime) -> bool:
    value = await bus.redis.hget(bus.keys.schedule("beat"), "last_tick")
    return value is not None and parse_iso(value) >= tick
