"""The last (or first) entries of a stream, filtered, and following it live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from eventbus.bus import EventBus
from eventbus.errors import ConnectionFailed
from eventbus.inspection.common import guarded, last_generated, redis_errors_of, redis_of
from eventbus.inspection.decode import Entry, decode_pair
from eventbus.inspection.streams import require_stream
from eventbus.streamid import format_id, parse_id, predecessor
from eventbus.text import as_text


def _matches(entry: Entry, types: Sequence[str], key: str | None) -> bool:
    if types and entry.type not in types:
        return False
    return key is None or entry.key == key


@dataclass(frozen=True, slots=True)
class Tail:
    entries: list[Entry]  # oldest first
    follow_after: str  # following from here misses nothing and repeats nothing
    limit_reached: bool  # the filters' scan stopped at its limit with fewer than asked


@guarded
async def tail(
    bus: EventBus,
    stream: str,
    *,
    count: int = 10,
    start: str | None = None,
    types: Sequence[str] = (),
    key: str | None = None,
    scan_limit: int = 100_000,
) -> Tail:
    """The last `count` entries (oldest first) matching the filters; with `start`, the
    first `count` from that id on. Filtering looks at up to `scan_limit` entries."""
    await require_stream(bus, stream)
    if start is not None:
        return await _tail_from(
            bus, stream, start, count=count, types=types, key=key, scan_limit=scan_limit
        )
    skey = bus.keys.stream(stream)
    newest = await last_generated(bus, stream)  # read up to here, follow from here
    found: list[Entry] = []
    scanned = 0
    page = max(count, 100) if (types or key) else count
    cursor = newest
    while len(found) < count and scanned < scan_limit:
        batch = await redis_of(bus).xrevrange(skey, cursor, "-", count=page)
        if not batch:
            break
        scanned += len(batch)
        found += [e for e in map(decode_pair, batch) if _matches(e, types, key)]
        cursor = "(" + as_text(batch[-1][0])
    limit = scanned >= scan_limit and len(found) < count
    return Tail(list(reversed(found[:count])), newest, limit)


async def _tail_from(
    bus: EventBus,
    stream: str,
    start: str,
    *,
    count: int,
    types: Sequence[str],
    key: str | None,
    scan_limit: int,
) -> Tail:
    skey = bus.keys.stream(stream)
    found: list[Entry] = []
    scanned = 0
    after = format_id(predecessor(parse_id(start)))
    page = max(count, 100) if (types or key) else count
    while len(found) < count and scanned < scan_limit:
        batch = await redis_of(bus).xrange(skey, "(" + after, "+", count=page)
        if not batch:
            break
        scanned += len(batch)
        found += [e for e in map(decode_pair, batch) if _matches(e, types, key)]
        after = as_text(batch[-1][0])
    if len(found) >= count and found:
        after = found[count - 1].id  # follow on after the last one shown
    limit = scanned >= scan_limit and len(found) < count
    return Tail(found[:count], after, limit)


async def follow(
    bus: EventBus,
    stream: str,
    *,
    after: str,
    types: Sequence[str] = (),
    key: str | None = None,
    block_ms: int = 1000,
) -> AsyncIterator[Entry]:
    """Entries added after `after`, as they arrive (XREAD BLOCK), forever."""
    skey = bus.keys.stream(stream)
    last = after
    while True:
        try:
            with redis_errors_of(bus):  # what is not an outage: an eventbus error
                reply = await redis_of(bus).xread({skey: last}, count=100, block=block_ms)
        except (ConnectionFailed, OSError):
            # Redis restarting: wait, then go on from the last entry seen (nothing lost)
            await asyncio.sleep(1.0)
            continue
        for _, entries in reply or []:
            for pair in entries:
                entry = decode_pair(pair)
                last = entry.id
                if _matches(entry, types, key):
                    yield entry
