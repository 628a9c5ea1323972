"""Streams and their groups: list them, describe one, and check one exists."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from eventbus.bus import EventBus
from eventbus.errors import Param
from eventbus.inspection.common import (
    NotFound,
    WrongType,
    age_of,
    guarded,
    int_or_none,
    lag_of,
    pages,
    redis_of,
)
from eventbus.status import GroupInfo, StreamInfo, stream_info
from eventbus.text import as_text


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
        return age_of(self.last_id, time.time())

    @property
    def first_age_s(self) -> float | None:
        return age_of(self.first_id, time.time())


@guarded
async def stream_names(bus: EventBus) -> list[str]:
    """Every stream under the bus's prefix (from SCAN; dead-letter streams excluded)."""
    names = set()
    async for raw in redis_of(bus).scan_iter(
        match=bus.keys.stream_pattern(), count=1000, _type="stream"
    ):
        name = bus.keys.stream_name(as_text(raw))
        if name is not None:
            names.add(name)
    return sorted(names)


@guarded
async def list_streams(bus: EventBus) -> list[StreamSummary]:
    """A summary of every stream under the prefix: one pipelined round for all of them."""
    names = await stream_names(bus)
    if not names:
        return []
    pipe = redis_of(bus).pipeline(transaction=False)
    for name in names:
        key = bus.keys.stream(name)
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
        pipe.xlen(bus.keys.dlq(name))
        pipe.memory_usage(key, samples=0)
    replies = await pipe.execute(raise_on_error=False)
    out = []
    for i, name in enumerate(names):
        info = replies[4 * i]
        if isinstance(info, Exception):  # deleted between SCAN and now
            continue
        out.append(_summary(bus, name, info, replies[4 * i + 1 : 4 * i + 4]))
    return out


def _summary(bus: EventBus, name: str, info: Any, more: list[Any]) -> StreamSummary:
    """A stream's summary from its XINFO STREAM and [XINFO GROUPS, XLEN of its dead
    letters, MEMORY USAGE] replies (each may be an error)."""
    groups, dlq, memory = more
    groups = [] if isinstance(groups, Exception) else groups
    first, last = info.get("first-entry"), info.get("last-entry")
    last_id = as_text(last[0]) if last else None
    lags = [lag_of(g, last_id) for g in groups]
    return StreamSummary(
        name=name,
        key=bus.keys.stream(name),
        length=int(info["length"]),
        first_id=as_text(first[0]) if first else None,
        last_id=last_id,
        groups=len(groups),
        lag=None if any(lag is None for lag in lags) else sum(x or 0 for x in lags),
        dlq_length=0 if isinstance(dlq, Exception) else int(dlq),
        memory_bytes=_memory(memory),
    )


def _memory(reply: Any) -> int | None:
    """MEMORY USAGE's figure; None where the server refused it (or the key is gone)."""
    return None if isinstance(reply, Exception) or reply is None else int(reply)


PREFIX = Param("prefix", "the bus's prefix")


@guarded
async def require_stream(bus: EventBus, stream: str, *, or_dead_letters: bool = False) -> None:
    """Raise NotFound, naming the streams that do exist, unless `stream` exists (or, with
    `or_dead_letters`, its dead-letter stream: the stream may be gone, its letters not)."""
    keys = [bus.keys.stream(stream), bus.keys.dlq(stream)]
    pipe = redis_of(bus).pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = [as_text(kind) for kind in await pipe.execute()]
    for key, kind in zip(keys, kinds, strict=True):
        if kind not in ("none", "stream"):
            raise WrongType.naming(
                f"key {key!r} holds a {kind}, not a stream: something other than eventbus "
                f"wrote it under prefix {bus.keys.prefix!r}; rename or delete it "
                "(redis-cli RENAME/DEL), or use another ",
                Param("prefix", "prefix"),
            )
    if kinds[0] == "stream" or (or_dead_letters and kinds[1] == "stream"):
        return
    known = await stream_names(bus)
    hint = f"streams under it: {', '.join(known)}" if known else "it holds no streams"
    raise NotFound.naming(
        f"no stream {stream!r} under prefix {bus.keys.prefix!r} ({hint}); check the name, or ",
        PREFIX,
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
    async for batch in pages(bus, bus.keys.dlq(stream), page=5000, limit=DLQ_SCAN):
        for _, fields in batch:
            group = as_text(fields.get(b"dlq_group", b"?"))
            counts[group] = counts.get(group, 0) + 1
        seen += len(batch)
    return counts, seen < DLQ_SCAN


@guarded
async def stream_detail(bus: EventBus, stream: str) -> StreamDetail:
    """The stream, then each group with its consumers and oldest pending entry."""
    await require_stream(bus, stream)
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    dead, exact = await _dead_by_group(bus, stream)
    key = info.key
    pipe = redis_of(bus).pipeline(transaction=False)
    pipe.memory_usage(key, samples=0)
    for g in info.groups:
        pipe.xinfo_consumers(key, g.name)
        pipe.xpending(key, g.name)
    replies = await pipe.execute(raise_on_error=False)
    now = time.time()
    groups = []
    for i, g in enumerate(info.groups):
        consumers, summary = replies[1 + 2 * i : 3 + 2 * i]
        groups.append(_group_detail(g, consumers, summary, dead, now=now, last_id=info.last_id))
    return StreamDetail(info, _memory(replies[0]), groups, exact)


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
        consumers=[consumer_detail(c) for c in listed if isinstance(c, dict)],
        pending=g.pending,
        lag=group_lag(g, last_id),
        last_delivered_id=g.last_delivered_id,
        entries_read=g.entries_read,
        oldest_pending_id=oldest,
        oldest_pending_age_s=age_of(oldest, now),
        dead_letters=dead.get(g.name, 0),
    )


def group_lag(g: GroupInfo, last_id: str | None) -> int | None:
    """The group's lag; where Redis gives none, 0 if it has read up to `last_id`."""
    return g.lag if g.lag is not None else (0 if g.last_delivered_id == last_id else None)


def consumer_detail(c: dict[Any, Any]) -> ConsumerDetail:
    """A consumer from XINFO CONSUMERS, whatever its fields hold."""
    inactive = int_or_none(c.get("inactive"))
    return ConsumerDetail(
        name=as_text(c.get("name", "?")),
        pending=int_or_none(c.get("pending")) or 0,
        idle_s=(int_or_none(c.get("idle")) or 0) / 1000,
        inactive_s=None if inactive in (None, -1) else (inactive or 0) / 1000,
    )


@guarded
async def require_group(bus: EventBus, stream: str, group: str) -> GroupInfo:
    """The group, or NotFound naming the stream's groups."""
    await require_stream(bus, stream)
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    for g in info.groups:
        if g.name == group:
            return g
    names = ", ".join(g.name for g in info.groups) or "none"
    raise NotFound(f"stream {stream!r} has no group {group!r} (its groups: {names})")
