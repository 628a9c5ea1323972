"""Schedules with real processes: replicas, a replica killed, a scheduler down for ticks."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from eventbus import EventBus
from eventbus.schedules.scheduler import parse_iso
from eventbus.testing import wait_for
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


async def test_down_for_three_ticks_then_up_with_each_misfire_policy(
    eventbus_redis_url: str, processes: Processes, make_bus: object
) -> None:
    policies = {"skip": 0, "once": 1, "all": 3}
    buses = {p: make_bus(eventbus_redis_url, f"mf{p}{id(processes) % 10_000}") for p in policies}  # type: ignore[operator]
    env = {"spec": "*/4 * * * * *"}
    procs = {
        p: start_scheduler(processes, eventbus_redis_url, buses[p].keys.prefix, misfire=p, **env)
        for p in policies
    }
    for bus in buses.values():
        await wait_for(lambda b=bus: at_least(b, 2), timeout=30, message="2 ticks")
    await wait_for(lambda: mid_period(4), timeout=10)  # kill all between two ticks
    for proc in procs.values():
        proc.kill()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]
    last = {
        p: parse_iso(await b.redis.hget(b.keys.schedule("beat"), "last_tick"))
        for p, b in buses.items()
    }
    assert len(set(last.values())) == 1  # all three were killed after the same tick
    [last_tick] = set(last.values())
    # down for three ticks (+4, +8, +12 s), restarted 1.5 s after the third, so that it
    # looks 2-2.5 s after it: late, not on time
    restart_at = last_tick + timedelta(seconds=13.5)
    await wait_for(lambda: datetime.now(UTC) >= restart_at, timeout=30, message="the outage")
    for p in policies:
        procs[p] = start_scheduler(
            processes, eventbus_redis_url, buses[p].keys.prefix, misfire=p, **env
        )
    window_end = last_tick + timedelta(seconds=12)
    for bus in buses.values():
        await wait_for(lambda b=bus: handled_through(b, window_end), timeout=30)
    for p, bus in buses.items():
        caught_up = [t for t in await beat_ticks(bus) if last_tick < t <= window_end]
        assert len(caught_up) == policies[p], (p, caught_up)
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]


def mid_period(period: int) -> bool:
    now = datetime.now(UTC)
    return 1.5 <= now.second % period + now.microsecond / 1e6 < 2.5


async def handled_through(bus: EventBus, tick: datetime) -> bool:
    value = await bus.redis.hget(bus.keys.schedule("beat"), "last_tick")
    return value is not None and parse_iso(value) >= tick
