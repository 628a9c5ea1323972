"""The scheduler in-process: each tick once across replicas, misfire policies, state.

The scheduler's time is a FakeClock that the tests move (Redis still runs in real
time); `test_a_tick_is_emitted_on_time_in_real_time` keeps one on the system clock.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventbus import Event, EventBus, Router
from eventbus.schedules.scheduler import Scheduler, iso, parse_iso
from eventbus.testing import running_worker, wait_for
from eventbus.testing.clock import FakeClock
from handlers import CleanupOldNotes, NoteCreated
from handlers import router as sample_router
from handlers.store import NoteStore
from tests.apps.events import Beat

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "test_my_schedules.py"


class Pair(Event, stream="pairs"):
    tick: str
    half: int


async def beats(bus: EventBus) -> list[str]:
    entries = await bus.redis.xrange(bus.keys.stream("beats"))
    return [json.loads(f[b"data"])["tick"] for _, f in entries]


def every_second(router: Router, **options: object) -> None:
    @router.schedule("* * * * * *", name="beat", **options)  # type: ignore[arg-type]
    def beat(tick: datetime) -> Beat:
        return Beat(tick=tick.isoformat())


def half_past_a_second() -> FakeClock:
    """A fake clock half a second before the next tick of a one-second schedule."""
    return FakeClock(datetime.now(UTC).replace(microsecond=500_000))


async def test_a_tick_is_emitted_on_time_in_real_time(bus: EventBus) -> None:
    router = Router()
    every_second(router, misfire="skip")  # only a tick met on time fires
    async with Scheduler(bus, router.schedules) as scheduler:
        await wait_for(lambda: beats_at_least(bus, 1), timeout=10)
    [first, *_] = [datetime.fromisoformat(t) for t in await beats(bus)]
    assert scheduler.stats["beat"].fired >= 1
    assert timedelta(0) < datetime.now(UTC) - first < timedelta(seconds=5)
    state = await bus.redis.hgetall(bus.keys.schedule("beat"))
    assert int(state[b"fires"]) >= 1 and b"skipped" not in state


async def test_two_replicas_emit_each_tick_once(bus: EventBus) -> None:
    router = Router()
    every_second(router)
    clock = half_past_a_second()
    async with (
        Scheduler(bus, router.schedules, clock=clock) as a,
        Scheduler(bus, router.schedules, clock=clock) as b,
    ):
        await clock.sleeping(2)
        await clock.advance(3)
        await wait_for(lambda: beats_at_least(bus, 3), timeout=10)
    ticks = await beats(bus)
    assert len(ticks) == len(set(ticks))  # no tick twice
    seconds = [datetime.fromisoformat(t) for t in ticks]
    # none missed: consecutive seconds
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(seconds))
    fired = a.stats["beat"].fired + b.stats["beat"].fired
    assert fired == len(ticks)
    assert a.stats["beat"].duplicates + b.stats["beat"].duplicates >= len(ticks) - 1
    state = await bus.redis.hgetall(bus.keys.schedule("beat"))
    assert int(state[b"fires"]) == len(ticks) and state[b"spec"] == b"* * * * * *"
    assert parse_iso(state[b"last_tick"]) == seconds[-1].astimezone(UTC)
    assert parse_iso(state[b"next_tick"]) > parse_iso(state[b"last_tick"])


async def beats_at_least(bus: EventBus, n: int) -> bool:
    return len(await beats(bus)) >= n


def between_ticks(period: int) -> tuple[datetime, FakeClock]:
    """A tick of a `period`-second schedule, and a fake clock 2.5 s past it."""
    now = datetime.now(UTC)
    tick = now.replace(microsecond=0) - timedelta(seconds=now.second % period)
    return tick, FakeClock(tick + timedelta(seconds=2.5))


@pytest.mark.parametrize(("misfire", "caught_up"), [("skip", 0), ("once", 1), ("all", 3)])
async def test_misfire_policies_after_three_missed_ticks(
    bus: EventBus, misfire: str, caught_up: int
) -> None:
    router = Router()

    @router.schedule("*/5 * * * * *", name="beat", misfire=misfire, misfire_grace=60)  # type: ignore[arg-type]
    def beat(tick: datetime) -> Beat:
        return Beat(tick=tick.isoformat())

    latest, clock = between_ticks(5)
    # the last tick anyone handled was four ticks ago: three were missed
    await bus.redis.hset(
        bus.keys.schedule("beat"), "last_tick", iso(latest - timedelta(seconds=15))
    )
    async with Scheduler(bus, router.schedules, clock=clock) as scheduler:
        await wait_for(lambda: scheduler.stats["beat"].fired + scheduler.stats["beat"].skipped == 3)
    ticks = [datetime.fromisoformat(t) for t in await beats(bus)]
    assert len(ticks) == caught_up
    if misfire == "once":
        assert ticks == [latest]  # the latest missed tick
    if misfire == "all":
        assert ticks == [latest - timedelta(seconds=10), latest - timedelta(seconds=5), latest]
    state = await bus.redis.hgetall(bus.keys.schedule("beat"))
    assert int(state.get(b"skipped", 0)) == 3 - caught_up


async def test_grace_bounds_the_catch_up(bus: EventBus) -> None:
    router = Router()

    @router.schedule("*/5 * * * * *", name="beat", misfire="once", misfire_grace=1)
    def beat(tick: datetime) -> Beat:
        return Beat(tick=tick.isoformat())

    latest, clock = between_ticks(5)
    await bus.redis.hset(bus.keys.schedule("beat"), "last_tick", iso(latest - timedelta(seconds=5)))
    async with Scheduler(bus, router.schedules, clock=clock) as scheduler:
        await wait_for(lambda: scheduler.stats["beat"].skipped == 1)
    assert await beats(bus) == []  # 2-3 s late, with a 1 s grace: not fired


async def test_no_history_no_catch_up_and_functions_may_fail(bus: EventBus) -> None:
    calls: list[datetime] = []
    router = Router()

    @router.schedule("* * * * * *", name="flaky")
    async def flaky(tick: datetime) -> list[Pair]:
        calls.append(tick)
        if len(calls) == 1:
            raise RuntimeError("the first tick fails")
        return [Pair(tick=tick.isoformat(), half=1), Pair(tick=tick.isoformat(), half=2)]

    clock = half_past_a_second()
    async with Scheduler(bus, router.schedules, clock=clock) as scheduler:
        await clock.sleeping(1)
        await clock.advance(3)
        await wait_for(lambda: len(calls) >= 3, timeout=10)
    assert scheduler.stats["flaky"].errors == 1
    entries = await bus.redis.xrange(bus.keys.stream("pairs"))
    assert len(entries) == 2 * (len(calls) - 1)  # both events of every later tick
    assert all(t.tzinfo is not None for t in calls)


async def test_ticks_are_given_in_the_schedules_zone(bus: EventBus) -> None:
    seen: list[datetime] = []
    router = Router()

    @router.schedule("* * * * * *", name="zoned", tz="Asia/Tokyo")
    def zoned(tick: datetime) -> None:
        seen.append(tick)

    clock = half_past_a_second()
    async with Scheduler(bus, router.schedules, clock=clock):
        await clock.sleeping(1)
        await clock.advance(1)
        await wait_for(lambda: seen)
    assert seen[0].utcoffset() == timedelta(hours=9)


async def test_sample_cleanup_deletes_only_old_notes(bus: EventBus) -> None:
    [schedule] = [s for s in sample_router.schedules if s.name == "cleanup-old-notes"]
    assert schedule.spec == "0 3 * * *"
    request = schedule.fn(datetime.now(UTC))
    assert request == CleanupOldNotes(older_than_days=30)
    now = time.time()
    async with running_worker(bus, sample_router):
        await bus.publish_many([
            NoteCreated(note_id="old-1", author="ann", title="t", created_at=now - 40 * 86400),
            NoteCreated(note_id="old-2", author="bob", title="t", created_at=now - 31 * 86400),
            NoteCreated(note_id="new-1", author="cho", title="t", created_at=now - 29 * 86400),
            NoteCreated(note_id="new-2", author="dee", title="t"),
        ])  # fmt: skip
        store = NoteStore(bus.redis, bus.keys.prefix)
        await wait_for(lambda: store.exists("new-2"))
        await bus.publish(request)  # type: ignore[arg-type]
        await wait_for(lambda: gone(store, "old-1", "old-2"), message="the cleanup")
        assert await store.exists("new-1") and await store.exists("new-2")
        # the cleanup announced its deletions: the audit log records them
        audit = f"{bus.keys.stream('notes')}:app:audit-log"
        await wait_for(lambda: audit_mentions(bus, audit, "deleted old-1", "deleted old-2"))


async def gone(store: NoteStore, *ids: str) -> bool:
    return not any([await store.exists(i) for i in ids])


async def audit_mentions(bus: EventBus, key: str, *texts: str) -> bool:
    lines = [line.decode() for line in await bus.redis.lrange(key, 0, -1)]
    return all(any(text in line for line in lines) for text in texts)


async def test_jitter_longer_than_the_period_loses_no_tick(bus: EventBus) -> None:
    router = Router()
    every_second(router, jitter=1.5)
    clock = half_past_a_second()
    async with (
        Scheduler(bus, router.schedules, clock=clock),
        Scheduler(bus, router.schedules, clock=clock),
    ):
        await clock.sleeping(2)
        await clock.advance(8)
        await wait_for(lambda: beats_at_least(bus, 6), timeout=20)
    ticks = [datetime.fromisoformat(t) for t in await beats(bus)]
    assert len(ticks) == len(set(ticks))
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(sorted(ticks)))


async def test_failures_are_recorded_in_the_state(bus: EventBus) -> None:
    router = Router()

    @router.schedule("* * * * * *", name="broken")
    def broken(tick: datetime) -> list[Pair]:
        return [Pair(tick=tick.isoformat(), half=1), Pair(tick=tick.isoformat(), half=2)]

    await bus.redis.set(bus.keys.stream("pairs"), "not a stream")  # every publish is refused
    clock = half_past_a_second()
    async with Scheduler(bus, router.schedules, clock=clock) as scheduler:
        await clock.sleeping(1)
        await clock.advance(2)
        await wait_for(lambda: scheduler.stats["broken"].errors >= 2)
    state = await bus.redis.hgetall(bus.keys.schedule("broken"))
    assert int(state[b"errors"]) >= 2 and b"WRONGTYPE" in state[b"last_error"]


async def test_a_changed_spec_resets_next_tick(bus: EventBus) -> None:
    key = bus.keys.schedule("beat")
    await bus.redis.hset(key, mapping={"spec": "@yearly", "tz": "UTC",
                                       "next_tick": "2099-01-01T00:00:00.000000Z"})  # fmt: skip
    router = Router()
    every_second(router)
    clock = half_past_a_second()
    async with Scheduler(bus, router.schedules, clock=clock):
        await clock.sleeping(1)
        await clock.advance(1)
        await wait_for(lambda: beats_at_least(bus, 1))
        await wait_for(lambda: next_tick_before(bus, key, "2099"))


async def next_tick_before(bus: EventBus, key: str, year: str) -> bool:
    value = await bus.redis.hget(key, "next_tick")
    return value is not None and value.decode() < year


async def test_the_docs_example_of_testing_a_schedule(bus: EventBus) -> None:
    spec = importlib.util.spec_from_file_location("docs_example_test_my_schedules", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    await example.test_the_report_is_due_at_six_in_berlin(bus)
