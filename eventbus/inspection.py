"""Inspect and repair streams, groups, pending entries and dead letters.

The library behind the ``eventbus`` inspection commands; usable from code too. Every
function takes an :class:`~eventbus.bus.EventBus` (for its keys and connection) and
reads or writes only what it says. Read functions never change state; the repair
functions (:func:`redrive`, :func:`purge_dead`, :func:`reset_group`,
:func:`delete_consumer`, :func:`delete_group`) take ``dry_run`` and report what they did
or would do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus.bus import EventBus
from eventbus.envelope import Envelope, parse_fields
from eventbus.errors import DecodeError, EventBusError
from eventbus.scripts import SCRIPTS
from eventbus.status import GroupInfo, StreamInfo, stream_info
from eventbus.streamid import format_id, ms_of, parse_id, predecessor
from eventbus.text import as_text

Fields = dict[str, Any]


class NotFound(EventBusError):
    """A stream, group, consumer or entry that does not exist."""


class WrongType(EventBusError):
    """A key under the prefix, where a stream belongs, holds something else."""


def _lag(group: dict[str, Any], last_id: str | None) -> int | None:
    """XINFO GROUPS' lag; where Redis gives none (6.2, or after a deletion), 0 when the
    group has read up to the last entry, else None (unknown)."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    if last_id is None or as_text(group["last-delivered-id"]) == last_id:
        return 0
    return None


def _redis(bus: EventBus) -> Any:
    """The bus's client, untyped: redis-py's stubs do not know its decoded replies."""
    return bus.redis


async def _pages(
    bus: EventBus,
    key: str,
    low: str = "-",
    high: str = "+",
    *,
    page: int = 10_000,
    limit: int | None = None,
) -> AsyncIterator[list[Any]]:
    """XRANGE `low`..`high` in pages of `page` entries, at most `limit` in all: long
    streams are read without holding them in memory or blocking Redis for long."""
    cursor, seen = low, 0
    while limit is None or seen < limit:
        count = page if limit is None else min(page, limit - seen)
        batch = await _redis(bus).xrange(key, cursor, high, count=count)
        if batch:
            yield batch
        seen += len(batch)
        if len(batch) < count:
            return
        cursor = "(" + as_text(batch[-1][0])


def _age(entry_id: str | None, now: float) -> float | None:
    return None if not entry_id else max(0.0, now - ms_of(entry_id) / 1000)


# -- streams ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSummary:
    name: str
    key: str
    length: int
    first_id: str | None
    last_id: str | None
    groups: int
    lag: int | None  # total over groups; None when Redis cannot tell for some group
    dlq_length: int
    memory_bytes: int | None  # MEMORY USAGE; None where the server refuses it

    @property
    def last_age_s(self) -> float | None:
        return _age(self.last_id, time.time())

    @property
    def first_age_s(self) -> float | None:
        return _age(self.first_id, time.time())


async def stream_names(bus: EventBus) -> list[str]:
    """Every stream under the bus's prefix (from SCAN; dead-letter streams excluded)."""
    names = set()
    async for raw in _redis(bus).scan_iter(
        match=bus.keys.stream_pattern(), count=1000, _type="stream"
    ):
        name = bus.keys.stream_name(as_text(raw))
        if name is not None:
            names.add(name)
    return sorted(names)


async def list_streams(bus: EventBus) -> list[StreamSummary]:
    """A summary of every stream under the prefix: one pipelined round for all of them."""
    names = await stream_names(bus)
    if not names:
        return []
    pipe = _redis(bus).pipeline(transaction=False)
    for name in names:
        key = bus.keys.stream(name)
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
        pipe.xlen(bus.keys.dlq(name))
        pipe.memory_usage(key, samples=0)
    replies = await pipe.execute(raise_on_error=False)
    out = []
    for i, name in enumerate(names):
        info, groups, dlq, memory = replies[4 * i : 4 * i + 4]
        if isinstance(info, Exception):  # deleted between SCAN and now
            continue
        groups = [] if isinstance(groups, Exception) else groups
        first, last = info.get("first-entry"), info.get("last-entry")
        last_id = as_text(last[0]) if last else None
        lags = [_lag(g, last_id) for g in groups]
        out.append(
            StreamSummary(
                name=name,
                key=bus.keys.stream(name),
                length=int(info["length"]),
                first_id=as_text(first[0]) if first else None,
                last_id=as_text(last[0]) if last else None,
                groups=len(groups),
                lag=None if any(lag is None for lag in lags) else sum(x or 0 for x in lags),
                dlq_length=0 if isinstance(dlq, Exception) else int(dlq),
                memory_bytes=None
                if isinstance(memory, Exception) or memory is None
                else int(memory),
            )
        )
    return out


async def require_stream(bus: EventBus, stream: str, *, or_dead_letters: bool = False) -> None:
    """Raise NotFound, naming the streams that do exist, unless `stream` exists (or, with
    `or_dead_letters`, its dead-letter stream: the stream may be gone, its letters not)."""
    keys = [bus.keys.stream(stream), bus.keys.dlq(stream)]
    pipe = _redis(bus).pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = [as_text(kind) for kind in await pipe.execute()]
    for key, kind in zip(keys, kinds, strict=True):
        if kind not in ("none", "stream"):
            raise WrongType(
                f"key {key!r} holds a {kind}, not a stream: something other than eventbus "
                f"wrote it under prefix {bus.keys.prefix!r}; rename or delete it "
                "(redis-cli RENAME/DEL), or use another --prefix"
            )
    if kinds[0] == "stream" or (or_dead_letters and kinds[1] == "stream"):
        return
    known = await stream_names(bus)
    hint = f"streams under it: {', '.join(known)}" if known else "it holds no streams"
    raise NotFound(
        f"no stream {stream!r} under prefix {bus.keys.prefix!r} ({hint}); "
        "check the name, or --prefix"
    )


# -- groups and consumers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerDetail:
    name: str
    pending: int
    idle_s: float  # since its last attempted interaction (read or claim)
    inactive_s: float | None  # since its last successful interaction (Redis >= 7.2)


@dataclass(frozen=True, slots=True)
class GroupDetail:
    name: str
    consumers: list[ConsumerDetail]
    pending: int
    lag: int | None
    last_delivered_id: str
    entries_read: int | None
    oldest_pending_id: str | None
    oldest_pending_age_s: float | None
    dead_letters: int


@dataclass(frozen=True, slots=True)
class StreamDetail:
    stream: StreamInfo
    memory_bytes: int | None
    groups: list[GroupDetail] = field(default_factory=list)
    dead_letters_exact: bool = True  # False: counted per group over the first DLQ_SCAN


DLQ_SCAN = 100_000


async def _dead_by_group(bus: EventBus, stream: str) -> tuple[dict[str, int], bool]:
    """Dead letters per group, over at most DLQ_SCAN entries (exact when below that)."""
    counts: dict[str, int] = {}
    seen = 0
    async for batch in _pages(bus, bus.keys.dlq(stream), page=5000, limit=DLQ_SCAN):
        for _, fields in batch:
            group = as_text(fields.get(b"dlq_group", b"?"))
            counts[group] = counts.get(group, 0) + 1
        seen += len(batch)
    return counts, seen < DLQ_SCAN


async def stream_detail(bus: EventBus, stream: str) -> StreamDetail:
    """The stream, then each group with its consumers and oldest pending entry."""
    await require_stream(bus, stream)
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    dead, exact = await _dead_by_group(bus, stream)
    key = info.key
    pipe = _redis(bus).pipeline(transaction=False)
    pipe.memory_usage(key, samples=0)
    for g in info.groups:
        pipe.xinfo_consumers(key, g.name)
        pipe.xpending(key, g.name)
    replies = await pipe.execute(raise_on_error=False)
    memory = replies[0]
    now = time.time()
    groups = []
    for i, g in enumerate(info.groups):
        consumers, summary = replies[1 + 2 * i : 3 + 2 * i]
        groups.append(_group_detail(g, consumers, summary, dead, now=now, last_id=info.last_id))
    memory_bytes = None if isinstance(memory, Exception) or memory is None else int(memory)
    return StreamDetail(info, memory_bytes, groups, exact)


def _group_detail(
    g: GroupInfo,
    consumers: Any,
    summary: Any,
    dead: dict[str, int],
    *,
    now: float,
    last_id: str | None,
) -> GroupDetail:
    listed = [] if isinstance(consumers, Exception) else consumers
    oldest = None
    if isinstance(summary, dict) and summary.get("min"):
        oldest = as_text(summary["min"])
    return GroupDetail(
        name=g.name,
        consumers=[_consumer(c) for c in listed if isinstance(c, dict)],
        pending=g.pending,
        lag=g.lag if g.lag is not None else (0 if g.last_delivered_id == last_id else None),
        last_delivered_id=g.last_delivered_id,
        entries_read=g.entries_read,
        oldest_pending_id=oldest,
        oldest_pending_age_s=_age(oldest, now),
        dead_letters=dead.get(g.name, 0),
    )


async def require_group(bus: EventBus, stream: str, group: str) -> GroupInfo:
    await require_stream(bus, stream)
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    for g in info.groups:
        if g.name == group:
            return g
    names = ", ".join(g.name for g in info.groups) or "none"
    raise NotFound(f"stream {stream!r} has no group {group!r} (its groups: {names})")


# -- entries ----------------------------------------------------------------------------


# what the inspection commands decode and show of one entry: enough for any real event,
# bounded for a hostile one (a 20 MB field, thousands of fields, nesting 100k deep)
TEXT_LIMIT = 64 * 1024  # characters of a field's value (the rest is clipped, its size said)
PAYLOAD_LIMIT = 1024 * 1024  # bytes of payload decoded (the bus's default max_event_bytes)
FIELDS_LIMIT = 200  # fields listed of an entry that is not an envelope
DEPTH_LIMIT = 100  # levels of nesting of a payload shown


@dataclass(frozen=True, slots=True)
class Entry:
    """A stream entry, decoded as far as it goes: `envelope` and `payload` when it parses,
    `error` (why not) otherwise; `fields` always (text; bytes that are not UTF-8 shown as
    a repr; values over TEXT_LIMIT clipped; at most FIELDS_LIMIT, `fields_omitted` the
    rest). Everything is text as stored: escape it before it reaches a terminal."""

    id: str
    fields: Fields
    envelope: Envelope | None
    payload: Any
    error: str | None
    fields_omitted: int = 0

    @property
    def type(self) -> str | None:
        return self.envelope.type if self.envelope else self.fields.get("type")

    @property
    def key(self) -> str | None:
        return self.envelope.key if self.envelope else self.fields.get("key")

    def as_json(self) -> dict[str, Any]:
        env = self.envelope
        out: dict[str, Any] = {"id": self.id, "time": _iso_of(self.id)}
        if env is not None:
            out["envelope"] = {
                k: v
                for k, v in (
                    ("id", env.id),
                    ("type", env.type),
                    ("source", env.source),
                    ("time", env.time),
                    ("key", env.key),
                    ("ct", env.ct),
                    ("traceparent", env.traceparent),
                    ("tracestate", env.tracestate),
                    ("target", env.target),
                    ("headers", env.headers or None),
                )
                if v is not None
            }
            out["payload"] = self.payload
        if env is None or self.error:  # what it holds, when that is all there is to show
            out["fields"] = self.fields
        if self.fields_omitted:
            out["fields_omitted"] = self.fields_omitted
        if self.error:
            out["error"] = self.error
        return out


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _iso_of(entry_id: str) -> str | None:
    """The time of a stream id; None for an id that is not one (a dead letter's
    dlq_stream_id holding junk)."""
    try:
        return _iso_ms(ms_of(entry_id))
    except (ValueError, OverflowError, OSError):
        return None


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [clipped: {len(text):,} characters in all]"


def _field_text(value: Any, limit: int = TEXT_LIMIT) -> Any:
    """A field's value as text: UTF-8 decoded, else a repr; clipped to `limit` bytes."""
    if not isinstance(value, bytes | bytearray):
        return value
    size = len(value)
    head = bytes(value[:limit])
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        cut_mid_character = size > limit and exc.start > limit - 4
        text = head[: exc.start].decode() if cut_mid_character else repr(head)
    if size > limit:
        return f"{text}… [clipped: {size:,} bytes in all]"
    return text


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    """An entry's (name, value) pairs, from redis-py's dict or a flat list (an odd last
    name, which Redis never stores, is dropped rather than failing)."""
    if isinstance(raw, dict):
        return list(raw.items())
    return list(zip(raw[::2], raw[1::2], strict=False))


def _display_fields(pairs: list[tuple[Any, Any]]) -> tuple[Fields, int]:
    shown = pairs[:FIELDS_LIMIT]
    fields = {clip(as_text(k), 1024): _field_text(v) for k, v in shown}
    return fields, len(pairs) - len(shown)


def decode_entry(entry_id: Any, raw: Any) -> Entry:
    """Decode one XRANGE/XREAD entry; never raises for what the entry holds."""
    sid = as_text(entry_id)
    pairs = _pairs(raw)
    fields, omitted = _display_fields(pairs)
    # the envelope is parsed from clipped text fields (a 20 MB type is shown clipped)
    # and the payload as stored (its size is checked before decoding)
    clipped: dict[Any, Any] = {}
    for name, value in pairs:
        small = name == b"data" or not isinstance(value, bytes) or len(value) <= TEXT_LIMIT
        clipped[name] = value if small else _clip_bytes(value)
    try:
        envelope = parse_fields(sid, clipped)
    except DecodeError as exc:
        return Entry(sid, fields, None, None, clip(str(exc), 1024), omitted)
    payload, error = _payload(envelope)
    return Entry(sid, fields, envelope, payload, error, omitted)


def _clip_bytes(value: bytes) -> bytes:
    head = value[:TEXT_LIMIT].decode(errors="ignore")
    return f"{head}… [clipped: {len(value):,} bytes in all]".encode()


def _payload(envelope: Envelope) -> tuple[Any, str | None]:
    """The decoded payload, JSON-ready, or None and why it is not shown."""
    size = len(envelope.data)
    if size > PAYLOAD_LIMIT:
        return None, (
            f"payload of {size:,} bytes is larger than the {PAYLOAD_LIMIT:,} the inspection "
            "commands decode (its first bytes are in the fields)"
        )
    try:
        if envelope.is_msgpack:
            value = msgspec.msgpack.decode(envelope.data)
        else:
            value = msgspec.json.decode(envelope.data)
    except msgspec.DecodeError as exc:
        return None, clip(f"payload does not decode: {exc}", 1024)
    except RecursionError:
        return None, "payload does not decode: it nests too deeply for the decoder"
    if _deeper_than(value, DEPTH_LIMIT):
        return None, f"payload nests deeper than {DEPTH_LIMIT} levels; not shown"
    return jsonable(value), None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/maps nest in `value` more than `limit` levels (iteratively: a
    recursive walk is what would overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def jsonable(value: Any) -> Any:
    """`value` with what JSON cannot hold (bytes, as msgpack may carry, also as map
    keys; non-string keys) turned into text."""
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return _field_text(bytes(value))
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes | bytearray):
        return str(_field_text(bytes(key)))
    return str(key)


def _matches(entry: Entry, types: Sequence[str], key: str | None) -> bool:
    if types and entry.type not in types:
        return False
    return key is None or entry.key == key


@dataclass(frozen=True, slots=True)
class Tail:
    entries: list[Entry]  # oldest first
    follow_after: str  # following from here misses nothing and repeats nothing
    limit_reached: bool  # the filters' scan stopped at its limit with fewer than asked


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
    newest = await _last_generated(bus, stream)  # read up to here, follow from here
    found: list[Entry] = []
    scanned = 0
    page = max(count, 100) if (types or key) else count
    cursor = newest
    while len(found) < count and scanned < scan_limit:
        batch = await _redis(bus).xrevrange(skey, cursor, "-", count=page)
        if not batch:
            break
        scanned += len(batch)
        found += [e for e in map(_decode_pair, batch) if _matches(e, types, key)]
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
        batch = await _redis(bus).xrange(skey, "(" + after, "+", count=page)
        if not batch:
            break
        scanned += len(batch)
        found += [e for e in map(_decode_pair, batch) if _matches(e, types, key)]
        after = as_text(batch[-1][0])
    if len(found) >= count and found:
        after = found[count - 1].id  # follow on after the last one shown
    limit = scanned >= scan_limit and len(found) < count
    return Tail(found[:count], after, limit)


def _decode_pair(pair: Any) -> Entry:
    return decode_entry(pair[0], pair[1])


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
            reply = await _redis(bus).xread({skey: last}, count=100, block=block_ms)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # Redis restarting: wait, then go on from the last entry seen (nothing lost)
            await asyncio.sleep(1.0)
            continue
        for _, entries in reply or []:
            for pair in entries:
                entry = _decode_pair(pair)
                last = entry.id
                if _matches(entry, types, key):
                    yield entry


async def get_entry(bus: EventBus, stream: str, entry_id: str) -> Entry:
    await require_stream(bus, stream)
    found = await _redis(bus).xrange(bus.keys.stream(stream), entry_id, entry_id)
    if not found:
        raise NotFound(
            f"stream {stream!r} has no entry {entry_id} (trimmed, deleted, or never written; "
            f"'eventbus dlq ls {stream}' lists dead letters)"
        )
    return _decode_pair(found[0])


@dataclass(frozen=True, slots=True)
class DeliveryState:
    group: str
    # unread | pending | passed (acknowledged, or skipped by the group: created after the
    # entry, or reset past it) | dead-lettered | not for this group (targeted elsewhere)
    state: str
    consumer: str | None = None
    deliveries: int | None = None
    idle_s: float | None = None
    dead_letter_id: str | None = None
    target: str | None = None


async def delivery_states(bus: EventBus, stream: str, entry: Entry) -> list[DeliveryState]:
    """Where the entry stands in each group of the stream."""
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    key = info.key
    dead = {d.group: d.id for d in await dead_letters(bus, stream, original_ids=[entry.id])}
    target = entry.envelope.target if entry.envelope else entry.fields.get("target")
    pipe = _redis(bus).pipeline(transaction=False)
    for g in info.groups:
        pipe.xpending_range(key, g.name, min=entry.id, max=entry.id, count=1)
    pendings = await pipe.execute(raise_on_error=False)
    states = []
    for g, pending in zip(info.groups, pendings, strict=True):
        if target and target != g.name:
            states.append(DeliveryState(g.name, "not for this group", target=target))
        elif isinstance(pending, list) and pending:
            p = pending[0]
            states.append(
                DeliveryState(
                    g.name,
                    "pending",
                    as_text(p["consumer"]),
                    int(p["times_delivered"]),
                    int(p["time_since_delivered"]) / 1000,
                )
            )
        elif g.name in dead:
            states.append(DeliveryState(g.name, "dead-lettered", dead_letter_id=dead[g.name]))
        elif parse_id(entry.id) > parse_id(g.last_delivered_id):
            states.append(DeliveryState(g.name, "unread"))
        else:
            states.append(DeliveryState(g.name, "passed"))
    return states


# -- pending entries --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: str
    consumer: str
    idle_s: float
    deliveries: int
    type: str | None  # None when the entry has no type field, or is gone
    gone: bool = False  # no longer in the stream (trimmed or deleted)


async def pending_entries(
    bus: EventBus,
    stream: str,
    group: str,
    *,
    consumer: str | None = None,
    min_idle_s: float = 0.0,
    limit: int = 100,
) -> list[PendingEntry]:
    """The group's pending entries, oldest first, with each entry's event type."""
    await require_group(bus, stream, group)
    key = bus.keys.stream(stream)
    rows = await _redis(bus).xpending_range(
        key,
        group,
        min="-",
        max="+",
        count=limit,
        consumername=consumer,
        idle=int(min_idle_s * 1000) or None,
    )
    pipe = _redis(bus).pipeline(transaction=False)
    for row in rows:
        entry_id = as_text(row["message_id"])
        pipe.xrange(key, entry_id, entry_id)
    found = await pipe.execute() if rows else []
    out = []
    for row, entries in zip(rows, found, strict=True):
        type_name = None
        if entries:
            raw_type = entries[0][1].get(b"type")
            type_name = None if raw_type is None else _field_text(raw_type, 1024)
        out.append(
            PendingEntry(
                id=as_text(row["message_id"]),
                consumer=as_text(row["consumer"]),
                idle_s=int(row["time_since_delivered"]) / 1000,
                deliveries=int(row["times_delivered"]),
                type=type_name,
                gone=not entries,
            )
        )
    return out


# -- dead letters ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # in the dead-letter stream
    stream_id: str | None  # in the original stream
    group: str | None
    handler: str | None
    reason: str | None
    error_type: str | None
    error: str | None
    attempts: int | None
    time: str | None
    entry: Entry  # the original envelope, decoded
    raw: tuple[tuple[str, Any], ...] = ()  # every field, as stored

    @property
    def omitted(self) -> str | None:
        """What the worker did not copy into this letter (too large, too many fields):
        a redrive then writes the original entry back, while the stream still has it."""
        for k, v in self.raw:
            if k == "dlq_omitted":
                return as_text(v)
        return None

    @property
    def original_fields(self) -> list[tuple[str, Any]]:
        """The fields to write back: the dead letter's, minus its dlq_* details and any
        earlier target."""
        return [(k, v) for k, v in self.raw if not k.startswith("dlq_") and k != "target"]

    def as_json(self, traceback: str | None = None) -> dict[str, Any]:
        out = {
            "id": self.id,
            "stream_id": self.stream_id,
            "group": self.group,
            "handler": self.handler,
            "reason": self.reason,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "time": self.time,
            "event": self.entry.as_json(),
        }
        if traceback is not None:
            out["traceback"] = traceback
        return out


def _dead_letter(pair: Any) -> DeadLetter:
    entry_id, raw = as_text(pair[0]), pair[1]
    # names as stored (bytes that are not UTF-8 kept, surrogate-escaped, so a redrive
    # writes back exactly what was there); values as stored too, for the same reason
    raw_pairs = tuple((_name(k), v) for k, v in _pairs(raw))
    text = {k: _field_text(v) for k, v in raw_pairs if k.startswith("dlq_")}
    original = {_raw_name(k): v for k, v in raw_pairs if not k.startswith("dlq_")}
    stream_id = text.get("dlq_stream_id")
    return DeadLetter(
        id=entry_id,
        stream_id=stream_id,
        group=text.get("dlq_group"),
        handler=text.get("dlq_handler"),
        reason=text.get("dlq_reason"),
        error_type=text.get("dlq_error_type"),
        error=text.get("dlq_error"),
        attempts=_int(text.get("dlq_attempts")),
        time=text.get("dlq_time"),
        entry=decode_entry(stream_id or entry_id, original),
        raw=raw_pairs,
    )


def _name(value: Any) -> str:
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else str(value)


def _raw_name(name: str) -> bytes:
    return name.encode(errors="surrogateescape")


async def dead_letters(
    bus: EventBus,
    stream: str,
    *,
    group: str | None = None,
    ids: Iterable[str] = (),
    original_ids: Iterable[str] = (),
    limit: int | None = None,
) -> list[DeadLetter]:
    """Dead letters of `stream`, oldest first. With `ids` and/or `original_ids`, only
    those whose own id (in the dead-letter stream) is in `ids`, or whose original
    entry's id (in the stream) is in `original_ids`: the two come from different
    streams and may be equal, so they are never matched against each other."""
    wanted, originals = set(ids), set(original_ids)
    out = []
    async for batch in _pages(bus, bus.keys.dlq(stream), page=1000):
        for pair in batch:
            dead = _dead_letter(pair)
            if group is not None and dead.group != group:
                continue
            if (wanted or originals) and not (
                dead.id in wanted or (dead.stream_id is not None and dead.stream_id in originals)
            ):
                continue
            out.append(dead)
            if limit is not None and len(out) >= limit:
                return out
    return out


@dataclass(frozen=True, slots=True)
class Redriven:
    dead_letter_id: str
    group: str | None
    new_id: str | None  # None on a dry run, or when gone
    gone: bool = False  # redriven (or purged) by someone else meanwhile: nothing written


async def redrive(
    bus: EventBus, stream: str, letters: Sequence[DeadLetter], *, dry_run: bool = False
) -> list[Redriven]:
    """Write each dead letter back to its stream, targeted at the group that failed it
    (others skip it), and delete it from the dead-letter stream, in one script per letter
    (the two keys share a hash slot): a letter redriven twice at once is written once.

    The whole selection is checked first (each names a group, and that group exists on
    the stream); nothing is changed when one fails the check."""
    groups = {g.name for g in (await stream_info(_redis(bus), bus.keys, stream, dlq_scan=0)).groups}
    for dead in letters:
        if dead.group is None:
            raise EventBusError(
                f"dead letter {dead.id} names no group (no dlq_group field), so it cannot "
                "be targeted; nothing was redriven (select the others with --id)"
            )
        if dead.group not in groups:
            raise EventBusError(
                f"dead letter {dead.id} is for group {dead.group!r}, which stream {stream!r} "
                "no longer has: every group would skip it; nothing was redriven (start a "
                "worker for that group first, or leave it out with --group/--id)"
            )
    originals = await _originals_of_incomplete(bus, stream, letters)
    plans: list[tuple[DeadLetter, list[Any]]] = []
    for dead in letters:
        if dead.id in originals:
            fields = list(originals[dead.id])
        else:
            fields = [x for k, v in dead.original_fields for x in (_raw_name(k), v)]
        fields += ["target", dead.group]
        if len(fields) > MAX_REDRIVE_VALUES:
            raise EventBusError(
                f"dead letter {dead.id}: its entry has {len(fields) // 2:,} fields, more than "
                f"a redrive can write ({MAX_REDRIVE_VALUES // 2:,}); nothing was redriven "
                "(leave it out with --id, or copy it back by hand)"
            )
        plans.append((dead, fields))
    out = []
    for dead, fields in plans:
        if dry_run:
            out.append(Redriven(dead.id, dead.group, None))
            continue
        new_id = await bus.wire.script(
            SCRIPTS.redrive, [bus.keys.stream(stream), bus.keys.dlq(stream)], [dead.id, *fields]
        )
        out.append(
            Redriven(dead.id, dead.group, as_text(new_id) if new_id else None, gone=not new_id)
        )
    return out


# Field names and values one redrive script can write (Lua's unpack() takes ~8,000).
MAX_REDRIVE_VALUES = 7000


async def _originals_of_incomplete(
    bus: EventBus, stream: str, letters: Sequence[DeadLetter]
) -> dict[str, list[Any]]:
    """The original entries of letters the worker did not copy whole (`dlq_omitted`),
    read from the stream, by letter id; raises (changing nothing) when one is gone."""
    out: dict[str, list[Any]] = {}
    for dead in letters:
        if dead.omitted is None:
            continue
        found = []
        if dead.stream_id is not None:
            found = await _redis(bus).xrange(
                bus.keys.stream(stream), dead.stream_id, dead.stream_id
            )
        if not found:
            raise EventBusError(
                f"dead letter {dead.id} does not hold its whole entry ({dead.omitted} were "
                f"not copied) and the original entry {dead.stream_id} is no longer in stream "
                f"{stream!r} (trimmed): it cannot be redriven; nothing was redriven (purge it, "
                "or leave it out with --id)"
            )
        raw = found[0][1]
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=False)
        out[dead.id] = [x for k, v in pairs if k not in (b"target", "target") for x in (k, v)]
    return out


async def purge_dead(
    bus: EventBus, stream: str, letters: Sequence[DeadLetter], *, dry_run: bool = False
) -> int:
    """Delete these dead letters; the count deleted (or that would be)."""
    if dry_run or not letters:
        return len(letters)
    ids = [d.id for d in letters]
    deleted = 0
    for i in range(0, len(ids), 1000):
        deleted += int(await _redis(bus).xdel(bus.keys.dlq(stream), *ids[i : i + 1000]))
    return deleted


async def dead_letter_traceback(bus: EventBus, stream: str, dead_id: str) -> str | None:
    found = await _redis(bus).xrange(bus.keys.dlq(stream), dead_id, dead_id)
    if not found:
        return None
    value = found[0][1].get(b"dlq_traceback")
    if value is None:
        return None
    text = as_text(value)  # its tail: where it failed
    return (
        text
        if len(text) <= TEXT_LIMIT
        else f"[clipped: {len(text):,} characters in all]…{text[-TEXT_LIMIT:]}"
    )


# -- group repairs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResetPlan:
    group: str
    from_id: str
    to_id: str
    redeliver: int  # entries after to_id up to from_id (read again)
    skip: int  # entries after from_id up to to_id (never read)
    pending: int  # the group's pending entries
    repending: int  # of those, after to_id: read again, their delivery counts restarting
    capped: bool  # counting stopped at the cap (figures are lower bounds)
    applied: bool


async def _count_between(
    bus: EventBus, key: str, low: str, high: str, cap: int
) -> tuple[int, bool]:
    """Entries with low < id <= high, counted in pages up to `cap` (then: capped)."""
    counted = 0
    async for batch in _pages(bus, key, "(" + low, high, limit=cap):
        counted += len(batch)
    return counted, counted >= cap


async def _last_generated(bus: EventBus, stream: str) -> str:
    info = await _redis(bus).xinfo_stream(bus.keys.stream(stream))
    return as_text(info["last-generated-id"])


async def resolve_position(bus: EventBus, stream: str, to: str) -> str:
    """An id for `to`: ``beginning`` (0-0), ``end`` (the last id the stream generated),
    or an id, which must not lie beyond that (the group would miss new entries)."""
    if to == "beginning":
        return "0-0"
    last = await _last_generated(bus, stream)
    if to == "end":
        return last
    if parse_id(to) > parse_id(last):
        raise EventBusError(
            f"{to} lies beyond stream {stream!r}'s last entry ({last}): the group would skip "
            "every entry added until then; use --to end to skip to the newest entry"
        )
    return to


async def _entries_read_at(bus: EventBus, key: str, target: str, cap: int) -> int | None:
    """The group's entries-read counter at `target` (Redis 7: so its lag stays known after
    the move): every entry ever added, minus those still in the stream after `target`.
    None where Redis has no counters (6.2) or the count would be too long to take."""
    info = await _redis(bus).xinfo_stream(key)
    added = info.get("entries-added")
    if added is None:
        return None
    # count up to the last id of this same reply: entries published meanwhile are in
    # neither figure (counting to "+" would subtract them without having added them)
    last = as_text(info["last-generated-id"])
    after, capped = await _count_between(bus, key, target, last, cap)
    return None if capped else max(0, int(added) - after)


async def reset_group(
    bus: EventBus,
    stream: str,
    group: str,
    to: str,
    *,
    dry_run: bool = False,
    cap: int = 1_000_000,
) -> ResetPlan:
    """Move the group's last-delivered id to `to` (XGROUP SETID): back to replay entries,
    forward to skip them. Pending entries at or before `to` stay with their consumers;
    those after it are read again, which hands them to the reader and restarts their
    delivery counts (Redis's XREADGROUP does that): `repending` counts them."""
    g = await require_group(bus, stream, group)
    key = bus.keys.stream(stream)
    target = await resolve_position(bus, stream, to)
    current = g.last_delivered_id
    redeliver = skip = repending = 0
    capped = False
    if parse_id(target) < parse_id(current):
        redeliver, capped = await _count_between(bus, key, target, current, cap)
        if g.pending:
            after = await _redis(bus).xpending_range(
                key, group, min="(" + target, max="+", count=min(cap, g.pending)
            )
            repending = len(after)
    elif parse_id(target) > parse_id(current):
        skip, capped = await _count_between(bus, key, current, target, cap)
    if not dry_run:
        entries_read = await _entries_read_at(bus, key, target, cap)
        await _redis(bus).xgroup_setid(key, group, target, entries_read=entries_read)
    return ResetPlan(
        group, current, target, redeliver, skip, g.pending, repending, capped, not dry_run
    )


@dataclass(frozen=True, slots=True)
class ConsumerRemoval:
    consumer: str
    pending: int
    claimed_to: str | None
    claimed: int
    deleted: bool


async def delete_consumer(
    bus: EventBus,
    stream: str,
    group: str,
    consumer: str,
    *,
    claim_to: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    active_s: float = 30.0,
) -> ConsumerRemoval:
    """Delete a consumer from a group. Its pending entries would be lost to the group's
    bookkeeping, so it refuses while it owns any, unless `claim_to` takes them first
    (XCLAIM ... JUSTID: delivery counts are kept); the deletion itself is one script that
    deletes only a consumer owning nothing. A consumer seen in the last `active_s`
    seconds is probably a running worker (it would take new entries, and come back on
    its next read): refused unless `force`."""
    await require_group(bus, stream, group)
    key = bus.keys.stream(stream)
    consumers = {as_text(c["name"]): c for c in await _redis(bus).xinfo_consumers(key, group)}
    if consumer not in consumers:
        names = ", ".join(sorted(consumers)) or "none"
        raise NotFound(f"group {group!r} has no consumer {consumer!r} (its consumers: {names})")
    pending = int(consumers[consumer]["pending"])
    if pending and claim_to is None:
        raise EventBusError(
            f"consumer {consumer!r} owns {pending} pending entries of group {group!r}: "
            "deleting it would drop them from the group; pass --claim-to OTHER to hand them "
            "over first (or let the workers reclaim them after their lease)"
        )
    if claim_to == consumer:
        raise EventBusError("--claim-to names the consumer being deleted; choose another")
    idle_s = int(consumers[consumer]["idle"]) / 1000
    if idle_s < active_s and not force:
        raise EventBusError(
            f"consumer {consumer!r} was active {idle_s:.1f}s ago: it is probably a running "
            "worker, which would take new entries and re-create itself on its next read; "
            "stop it first (or pass --force)"
        )
    claimed = 0
    if dry_run:
        return ConsumerRemoval(consumer, pending, claim_to, pending if claim_to else 0, False)
    if pending and claim_to is not None:
        claimed = await _claim_all(bus, key, group, consumer, claim_to)
    deleted = await bus.wire.script(SCRIPTS.delete_consumer, [key], [group, consumer])
    if not int(deleted):
        handed = (
            f"; {claimed} of its pending entries were handed to {claim_to!r} first"
            if claimed
            else ""
        )
        raise EventBusError(
            f"consumer {consumer!r} took new entries meanwhile (is it running?), so it was "
            f"not deleted{handed}: stop it, then run this again"
        )
    return ConsumerRemoval(consumer, pending, claim_to, claimed, True)


@dataclass(frozen=True, slots=True)
class GroupRemoval:
    group: str
    pending: int  # entries read and not acknowledged: dropped with the group
    lag: int | None  # entries it has not read (None: Redis cannot tell)
    consumers: list[ConsumerDetail]
    live: list[str]  # consumers seen within `active_s`
    deleted: bool


async def delete_group(
    bus: EventBus,
    stream: str,
    group: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    active_s: float = 30.0,
) -> GroupRemoval:
    """Delete a consumer group (XGROUP DESTROY), with its pending entries list: what a
    renamed or retired handler leaves behind, which holds back trimming for good. A
    group with a consumer seen in the last `active_s` seconds probably has a running
    worker (which would re-create it on its next read): refused unless `force`."""
    g = await require_group(bus, stream, group)
    key = bus.keys.stream(stream)
    listed = await _redis(bus).xinfo_consumers(key, group)
    consumers = [_consumer(c) for c in listed if isinstance(c, dict)]
    live = [c.name for c in consumers if c.idle_s < active_s]
    last = await _last_generated(bus, stream)
    lag = g.lag if g.lag is not None else (0 if g.last_delivered_id == last else None)
    if live and not force:
        raise EventBusError(
            f"group {group!r} has consumers active in the last {active_s:.0f}s "
            f"({', '.join(live)}): a worker is probably running it, and would re-create it "
            "on its next read; stop it first (or pass --force)"
        )
    deleted = False
    if not dry_run:
        deleted = bool(int(await _redis(bus).xgroup_destroy(key, group)))
    return GroupRemoval(group, g.pending, lag, consumers, live, deleted)


def _consumer(c: dict[Any, Any]) -> ConsumerDetail:
    inactive = _int(c.get("inactive"))
    return ConsumerDetail(
        name=as_text(c.get("name", "?")),
        pending=_int(c.get("pending")) or 0,
        idle_s=(_int(c.get("idle")) or 0) / 1000,
        inactive_s=None if inactive in (None, -1) else (inactive or 0) / 1000,
    )


def _int(value: Any) -> int | None:
    """An integer from a Redis reply, or None when it holds none (nil, or junk)."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


async def _claim_all(bus: EventBus, key: str, group: str, owner: str, to: str) -> int:
    claimed = 0
    while True:
        rows = await _redis(bus).xpending_range(
            key, group, min="-", max="+", count=1000, consumername=owner
        )
        if not rows:
            return claimed
        ids = [as_text(r["message_id"]) for r in rows]
        done = await _redis(bus).xclaim(key, group, to, 0, ids, justid=True)
        claimed += len(done)
        if not done:
            return claimed  # gone from the PEL meanwhile (acked): nothing left to move


# -- live view --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupFigures:
    stream: str
    group: str
    consumers: int
    pending: int
    lag: int | None
    entries_read: int | None
    oldest_pending_age_s: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every stream's and group's figures at `at` (Unix time), for rates between two."""

    at: float
    streams: list[StreamSummary]
    entries_added: dict[str, int | None]
    groups: list[GroupFigures]


async def snapshot(bus: EventBus) -> Snapshot:
    """All figures of every stream under the prefix: SCAN, then two pipelined rounds."""
    names = await stream_names(bus)
    summaries = await list_streams(bus) if names else []
    pipe = _redis(bus).pipeline(transaction=False)
    for s in summaries:
        pipe.xinfo_stream(s.key)
        pipe.xinfo_groups(s.key)
    replies = await pipe.execute(raise_on_error=False) if summaries else []
    added: dict[str, int | None] = {}
    groups: list[tuple[str, dict[str, Any]]] = []
    for i, s in enumerate(summaries):
        info, glist = replies[2 * i : 2 * i + 2]
        value = None if isinstance(info, Exception) else info.get("entries-added")
        added[s.name] = None if value is None else int(value)
        groups += [(s.name, g) for g in ([] if isinstance(glist, Exception) else glist)]
    oldest = await _oldest_pending(bus, groups)
    last_ids = {s.name: s.last_id for s in summaries}
    now = time.time()
    figures = [
        GroupFigures(
            stream=stream,
            group=as_text(g["name"]),
            consumers=int(g["consumers"]),
            pending=int(g["pending"]),
            lag=_lag(g, last_ids.get(stream)),
            entries_read=_entries_read(g),
            oldest_pending_age_s=_age(oldest.get((stream, as_text(g["name"]))), now),
        )
        for stream, g in groups
    ]
    return Snapshot(now, summaries, added, figures)


def _entries_read(g: dict[str, Any]) -> int | None:
    read = g.get("entries-read")
    if read is None and as_text(g["last-delivered-id"]) == "0-0" and "lag" in g:
        return 0  # Redis 7 reports nil for a group that has never read
    return None if read is None else int(read)


async def _oldest_pending(
    bus: EventBus, groups: list[tuple[str, dict[str, Any]]]
) -> dict[tuple[str, str], str]:
    busy = [(s, as_text(g["name"])) for s, g in groups if int(g["pending"])]
    if not busy:
        return {}
    pipe = _redis(bus).pipeline(transaction=False)
    for stream, group in busy:
        pipe.xpending(bus.keys.stream(stream), group)
    out = {}
    for where, summary in zip(busy, await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(summary, dict) and summary.get("min"):
            out[where] = as_text(summary["min"])
    return out


def rate(now: int | None, before: int | None, seconds: float) -> float | None:
    """Per-second rate of a counter between two snapshots; None when unknown."""
    if now is None or before is None or seconds <= 0 or now < before:
        return None
    return (now - before) / seconds
