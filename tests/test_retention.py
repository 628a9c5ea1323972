"""Retention: trimming by age never removes what a group still needs; the hard cap's
cuts into unread entries are counted."""

from __future__ import annotations

import logging
import time

import pytest

from eventbus import Event, EventBus, Router, Stream, WorkerSettings
from eventbus.retention import format_id, parse_id, successor, trim_stream
from eventbus.testing import running_worker, wait_for
from eventbus.worker.janitor import Janitor

kept = Stream("kept", retention=3600)
short = Stream("short", retention=0.2)
tiny = Stream("tiny", maxlen=50)


class Kept(Event, stream=kept):
    n: int


class Short(Event, stream=short):
    n: int


class Tiny(Event, stream=tiny):
    n: int


FAR_FUTURE_MS = int(time.time() * 1000) + 10 * 24 * 3600 * 1000


async def setup_groups(bus: EventBus, stream: str, count: int) -> list[bytes]:
    """`count` entries; group "fast" read and acked all, "slow" read 5 and acked 3."""
    key = bus.keys.stream(stream)
    for group in ("fast", "slow"):
        await bus.redis.xgroup_create(key, group, id="0", mkstream=True)
    ids = [
        await bus.redis.xadd(key, {"type": "Kept", "data": f'{{"n": {i}}}'}) for i in range(count)
    ]
    await bus.redis.xreadgroup("fast", "c", {key: ">"})
    await bus.redis.xack(key, "fast", *ids)
    await bus.redis.xreadgroup("slow", "c", {key: ">"}, count=5)
    await bus.redis.xack(key, "slow", *ids[:3])
    return ids


async def test_a_lagging_group_keeps_what_it_needs(bus: EventBus) -> None:
    ids = await setup_groups(bus, "kept", 20)
    report = await trim_stream(bus.redis, bus.keys, kept, now_ms=FAR_FUTURE_MS)
    # retention alone would remove all 20; "slow" still has ids[3], ids[4] pending
    assert report.removed == 3
    assert report.cut == parse_id(ids[3])
    assert "group slow still needs" in report.reason and "(pending)" in report.reason
    key = bus.keys.stream("kept")
    assert [e[0] for e in await bus.redis.xrange(key)] == ids[3:]
    # and the slow group can still read every entry it had not read
    rest = await bus.redis.xreadgroup("slow", "c", {key: ">"})
    assert [e[0] for e in rest[0][1]] == ids[5:]
    # once it acknowledges them, the next run removes them
    await bus.redis.xack(key, "slow", *ids[3:])
    report = await trim_stream(bus.redis, bus.keys, kept, now_ms=FAR_FUTURE_MS)
    assert report.removed == 17 and await bus.redis.xlen(key) == 0


async def test_unread_entries_hold_the_cut(bus: EventBus) -> None:
    ids = await setup_groups(bus, "kept", 20)
    key = bus.keys.stream("kept")
    await bus.redis.xack(key, "slow", *ids[3:5])  # nothing pending; 15 unread
    report = await trim_stream(bus.redis, bus.keys, kept, now_ms=FAR_FUTURE_MS)
    assert report.removed == 5
    assert parse_id(ids[4]) < report.cut <= parse_id(ids[5])  # type: ignore[operator]
    assert [e[0] for e in await bus.redis.xrange(key)] == ids[5:]
    assert "(unread)" in report.reason


async def test_young_entries_stay(bus: EventBus) -> None:
    await setup_groups(bus, "kept", 10)
    report = await trim_stream(bus.redis, bus.keys, kept)  # retention: 1 h; entries are new
    assert report.removed == 0 and report.cut is None
    assert await bus.redis.xlen(bus.keys.stream("kept")) == 10


async def test_no_retention_no_trim_and_dry_run(bus: EventBus) -> None:
    await setup_groups(bus, "kept", 10)
    report = await trim_stream(bus.redis, bus.keys, Stream("kept"), now_ms=FAR_FUTURE_MS)
    assert report.removed == 0 and "no retention" in report.reason
    report = await trim_stream(bus.redis, bus.keys, kept, now_ms=FAR_FUTURE_MS, dry_run=True)
    assert report.removed == 3
    assert await bus.redis.xlen(bus.keys.stream("kept")) == 10  # nothing removed


async def test_the_workers_janitor_trims_safely(bus: EventBus) -> None:
    handled: list[int] = []
    router = Router()

    @router.subscribe(name="quick", start_from="beginning")
    async def quick(event: Short) -> None:
        handled.append(event.n)

    key = bus.keys.stream("short")
    await bus.redis.xgroup_create(key, "lagging", id="0", mkstream=True)  # reads nothing
    async with running_worker(
        bus, router, settings=WorkerSettings(grace=5, janitor_interval=0.1)
    ) as worker:
        await bus.publish_many([Short(n=i) for i in range(30)])
        await wait_for(lambda: len(handled) == 30)
        await wait_for(lambda: worker.janitors[0].stats.runs >= 3)
        # "quick" is done and the entries are older than 0.2 s, but "lagging" has read nothing
        assert await bus.redis.xlen(key) == 30
        await bus.redis.xgroup_destroy(key, "lagging")
        await wait_for(lambda: stream_empty(bus, key), message="the janitor's trim")
    assert worker.janitors[0].stats.trimmed == 30


async def stream_empty(bus: EventBus, key: str) -> bool:
    return await bus.redis.xlen(key) == 0


async def test_maxlen_cutting_unread_entries_is_counted_and_logged(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    key = bus.keys.stream("tiny")
    await bus.redis.xgroup_create(key, "slow", id="0", mkstream=True)
    await bus.redis.xgroup_create(key, "caught-up", id="$")
    for start in range(0, 500, 100):
        await bus.publish_many([Tiny(n=i) for i in range(start, start + 100)])
    await bus.redis.xreadgroup("caught-up", "c", {key: ">"})
    await bus.redis.xack(key, "caught-up", *[e[0] for e in await bus.redis.xrange(key)])
    info = await bus.redis.xinfo_stream(key)
    janitor = Janitor(bus, "tiny", interval_s=60)
    if "entries-added" not in info:  # Redis 6.2: no counters to tell what the cap cut unread
        with caplog.at_level(logging.WARNING, logger="eventbus.janitor"):
            await janitor.run_once()
        assert janitor.stats.cut_unread == {}  # unknown: nothing claimed, nothing logged
        assert not [r for r in caplog.records if "had not read" in r.getMessage()]
        return
    with caplog.at_level(logging.WARNING, logger="eventbus.janitor"):
        await janitor.run_once()
        await janitor.run_once()  # logged once per increase, not every run
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    cut = int(info["entries-added"]) - int(info["length"])
    assert cut > 0
    assert janitor.stats.cut_unread == {"slow": cut}  # "caught-up" had read everything
    assert f"removed {cut} entries group slow had not read" in warnings[0]
    # the slow group catches up; later the cap cuts into its unread entries again
    await bus.redis.xreadgroup("slow", "c", {key: ">"})
    await janitor.run_once()
    for start in range(0, 300, 100):
        await bus.publish_many([Tiny(n=i) for i in range(start, start + 100)])
    info = await bus.redis.xinfo_stream(key)
    [slow] = [g for g in await bus.redis.xinfo_groups(key) if g["name"] == b"slow"]
    # unread and cut: everything removed beyond what slow had read when it caught up
    second = int(info["entries-added"]) - int(info["length"]) - int(slow["entries-read"])
    assert second > 0
    with caplog.at_level(logging.WARNING, logger="eventbus.janitor"):
        await janitor.run_once()
    assert janitor.stats.cut_unread["slow"] == cut + second
    assert f"removed {second} entries group slow" in caplog.records[-1].getMessage()


def test_ids_round_trip() -> None:
    assert parse_id("1700000000000-5") == (1700000000000, 5)
    assert parse_id(b"7") == (7, 0)
    assert format_id((1, 2)) == "1-2"
    assert successor((5, 2**64 - 1)) == (6, 0)  # a group created at a time has MAX_SEQ


async def test_groups_started_at_a_time_do_not_break_trimming(bus: EventBus) -> None:
    from datetime import UTC, datetime

    router = Router()

    @router.subscribe(name="timed", start_from=datetime.now(UTC))
    async def timed(event: Kept) -> None: ...

    async with running_worker(bus, router):
        report = await trim_stream(bus.redis, bus.keys, kept, now_ms=FAR_FUTURE_MS)
    assert report.removed == 0  # an empty stream; and no "Invalid stream ID" error
