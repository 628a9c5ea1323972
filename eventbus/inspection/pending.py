"""A group's pending entries: read by a consumer, not acknowledged yet."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.bus import EventBus
from eventbus.inspection.common import guarded, redis_of
from eventbus.inspection.decode import field_text
from eventbus.inspection.streams import require_group
from eventbus.text import as_text


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: str
    consumer: str
    idle_s: float
    deliveries: int
    type: str | None  # None when the entry has no type field, or is gone
    gone: bool = False  # no longer in the stream (trimmed or deleted)


@guarded
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
    rows = await redis_of(bus).xpending_range(
        key,
        group,
        min="-",
        max="+",
        count=limit,
        consumername=consumer,
        idle=int(min_idle_s * 1000) or None,
    )
    pipe = redis_of(bus).pipeline(transaction=False)
    for row in rows:
        entry_id = as_text(row["message_id"])
        pipe.xrange(key, entry_id, entry_id)
    found = await pipe.execute() if rows else []
    out = []
    for row, entries in zip(rows, found, strict=True):
        type_name = None
        if entries:
            raw_type = entries[0][1].get(b"type")
            type_name = None if raw_type is None else field_text(raw_type, 1024)
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
