"""Read the state of streams and groups from Redis (the demo summary, the CLI, metrics)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventbus.keys import Keys
from eventbus.redis_errors import client_errors
from eventbus.text import as_text


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None  # None before Redis 7
    lag: int | None  # None before Redis 7, or when Redis cannot tell


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    key: str
    length: int
    entries_added: int | None  # None before Redis 7
    first_id: str | None
    last_id: str | None
    groups: list[GroupInfo] = field(default_factory=list)
    dlq_length: int = 0
    dead_by_group: dict[str, int] = field(default_factory=dict)


async def stream_info(
    client: Redis, keys: Keys, stream: str, *, dlq_scan: int = 10_000
) -> StreamInfo:
    """The stream, its groups, and its dead letters (counted per group, up to `dlq_scan`).
    Raises eventbus errors only (`redis_errors`)."""
    with client_errors(client):
        return await _stream_info(client, keys, stream, dlq_scan)


async def _stream_info(client: Redis, keys: Keys, stream: str, dlq_scan: int) -> StreamInfo:
    key = keys.stream(stream)
    try:
        info = await client.xinfo_stream(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return StreamInfo(stream, key, 0, None, None, None)
        raise
    groups = [
        GroupInfo(
            name=as_text(g["name"]),
            consumers=int(g["consumers"]),
            pending=int(g["pending"]),
            last_delivered_id=as_text(g["last-delivered-id"]),
            entries_read=_int_or_none(g.get("entries-read")),
            lag=_int_or_none(g.get("lag")),
        )
        for g in await client.xinfo_groups(key)
    ]
    dlq_key = keys.dlq(stream)
    dlq_length = int(await client.xlen(dlq_key))
    dead: Counter[str] = Counter()
    if dlq_length and dlq_scan:
        entries: Any = await client.xrange(dlq_key, count=dlq_scan)
        for _, fields in entries:
            dead[as_text(fields.get(b"dlq_group", b"?"))] += 1
    first = info.get("first-entry")
    last = info.get("last-entry")
    return StreamInfo(
        name=stream,
        key=key,
        length=int(info["length"]),
        entries_added=_int_or_none(info.get("entries-added")),
        first_id=as_text(first[0]) if first else None,
        last_id=as_text(last[0]) if last else None,
        groups=groups,
        dlq_length=dlq_length,
        dead_by_group=dict(dead),
    )
