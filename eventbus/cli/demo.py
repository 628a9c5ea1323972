"""``eventbus demo``: the sample app on the embedded default, end to end."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TextIO

from eventbus.bus import EventBus
from eventbus.cli.connect import bus_for, reach
from eventbus.cli.run import observe
from eventbus.events import Event
from eventbus.status import GroupInfo, StreamInfo, stream_info
from eventbus.worker import Worker, WorkerSettings

POISON_EVERY = 1000  # one poison note per this many notes (at least one)
DELETE_EVERY = 10  # every 10th note is deleted again


def demo_events(count: int) -> list[Event]:
    """`count` events: notes, some deleted again, a few poison notes."""
    from handlers.events import NoteCreated, NoteDeleted

    events: list[Event] = []
    authors = ("ann", "bob", "cho", "dee")
    n = 0
    while len(events) < count:
        n += 1
        note_id = f"note-{n}"
        poison = n % POISON_EVERY == min(POISON_EVERY, count) // 2
        title = f"poison pill {n}" if poison else f"shopping list {n}"
        events.append(
            NoteCreated(
                note_id=note_id,
                author=authors[n % len(authors)],
                title=title,
                body=f"milk eggs bread item{n % 97}",
            )
        )
        if n % DELETE_EVERY == 0 and len(events) < count:
            events.append(NoteDeleted(note_id=note_id))
    return events


class Progress:
    """One updating line on a terminal; a line a second otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write(f"\r\x1b[2K{text}")
            self.out.flush()
        elif force or now - self._last >= 1.0:
            self.out.write(text + "\n")
            self.out.flush()
            self._last = now

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")


def drained(info: StreamInfo, groups: set[str]) -> bool:
    by_name = {g.name: g for g in info.groups}
    return all(
        name in by_name and by_name[name].pending == 0 and (by_name[name].lag or 0) == 0
        for name in groups
    ) and all(
        by_name[name].lag is not None or by_name[name].last_delivered_id == info.last_id
        for name in groups
    )


async def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from handlers import router

    bus = bus_for(args, service="notes-demo")
    try:
        where = (
            f"embedded Redis in {bus.embedded.data_dir}/ ({bus.embedded.socket_path})"
            if bus.embedded is not None
            else bus.display_url
        )
        out.write(f"eventbus demo on {where}, key prefix {args.prefix!r}\n")
        await reach(bus, args.connect_timeout)
        await reset(bus)
        worker = Worker(bus, router, settings=WorkerSettings(grace=5))
        observe(args, bus, worker=worker)
        await worker.start(timeout=30)
        notes = [c for c in worker.consumers if c.stream == "notes"]
        groups = {c.group for c in notes}
        out.write(f"{len(groups)} handlers, each in its own consumer group on stream 'notes':\n")
        for consumer in notes:
            out.write(f"  {consumer.group:<28} concurrency {consumer.spec.concurrency}\n")
        started = time.monotonic()
        try:
            await publish_all(bus, demo_events(args.events), Progress(out))
            published_s = time.monotonic() - started
            info = await wait_drained(bus, groups, Progress(out), args.timeout)
        finally:
            await worker.stop()
        elapsed = time.monotonic() - started
        print_summary(out, info, worker, published_s, elapsed)
        audit = await bus.redis.llen(f"{bus.keys.stream('notes')}:app:audit-log")
        out.write(
            f"  audit log: {audit:,} lines for {info.length:,} events (idempotent and "
            "transactional: exactly one line per event)\n"
        )
        where = "" if args.redis_url else f" --data-dir {args.data_dir}"
        if args.data_dir == ".eventbus":
            where = ""
        p = f" --prefix {bus.keys.prefix}{where}"
        out.write(
            f"\nLook around: eventbus info notes{p}  |  eventbus dlq ls notes{p}  |  "
            f"eventbus tail notes -n 5{p}\n"
        )
        return 0 if drained(info, groups) else 1
    finally:
        await bus.aclose()


async def reset(bus: EventBus) -> None:
    """Delete what an earlier demo run left under the demo prefix."""
    keys = [k async for k in bus.redis.scan_iter(match=f"{bus.keys.prefix}:*", count=1000)]
    for start in range(0, len(keys), 500):
        await bus.redis.delete(*keys[start : start + 500])


async def publish_all(bus: EventBus, events: list[Event], progress: Progress) -> None:
    for start in range(0, len(events), 100):
        await bus.publish_many(events[start : start + 100])
        progress.show(f"published {min(start + 100, len(events))}/{len(events)} events")
    progress.show(f"published {len(events)}/{len(events)} events", force=True)
    progress.done()


async def wait_drained(
    bus: EventBus, groups: set[str], progress: Progress, timeout: float
) -> StreamInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await stream_info(bus.redis, bus.keys, "notes")
        # Redis 6.2 has no entries-read: a group's progress shows once it has caught up
        done = sum(
            max(0, (entries_read(info, g) or 0) - g.pending)
            for g in info.groups
            if g.name in groups
        )
        total = info.length * len(groups)
        progress.show(
            f"handled {done}/{total} deliveries, dead letters {info.dlq_length}",
            force=drained(info, groups),
        )
        if drained(info, groups) or time.monotonic() > deadline:
            progress.done()
            return info
        await asyncio.sleep(0.1)


def entries_read(info: StreamInfo, group: GroupInfo) -> int | None:
    """Entries the group has read; on Redis 6.2 (no entries-read) known only once it has
    read up to the last entry (nothing is trimmed in the demo)."""
    if group.entries_read is not None:
        return group.entries_read
    return info.length if group.last_delivered_id == info.last_id else None


def group_lag(info: StreamInfo, group: GroupInfo) -> str:
    if group.lag is not None:
        return str(group.lag)
    return "0" if group.last_delivered_id == info.last_id else "?"


def print_summary(
    out: TextIO, info: StreamInfo, worker: Worker, published_s: float, elapsed: float
) -> None:
    stats = {c.group: c.stats for c in worker.consumers}
    published = info.entries_added if info.entries_added is not None else info.length
    out.write(
        f"\nSummary (read from Redis): {published} events published to {info.key} in "
        f"{published_s:.2f}s; every delivery settled {elapsed:.2f}s after the first publish "
        "(retries wait out their backoff)\n"
    )
    header = f"  {'group':<28} {'handled':>8} {'retried':>8} {'dead':>6} {'pending':>8} {'lag':>6}"
    out.write(header + "\n")
    for g in sorted(info.groups, key=lambda g: g.name):
        dead = info.dead_by_group.get(g.name, 0)
        read = entries_read(info, g)
        handled = "?" if read is None else str(read - g.pending - dead)
        retried = stats[g.name].reclaimed if g.name in stats else 0
        lag = group_lag(info, g)
        out.write(f"  {g.name:<28} {handled:>8} {retried:>8} {dead:>6} {g.pending:>8} {lag:>6}\n")
    out.write(
        f"  dead-letter stream {info.key}:dlq holds {info.dlq_length} "
        f"{'entry' if info.dlq_length == 1 else 'entries'} "
        "(the poison notes: the notifier gave up after 3 attempts)\n"
    )
