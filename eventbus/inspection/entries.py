"""One entry of a stream, and where it stands in each group."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.bus import EventBus
from eventbus.errors import Param
from eventbus.inspection.common import NotFound, guarded, redis_of
from eventbus.inspection.deadletters import dead_letters
from eventbus.inspection.decode import Entry, decode_pair
from eventbus.inspection.streams import require_stream
from eventbus.status import stream_info
from eventbus.streamid import parse_id
from eventbus.text import as_text


@guarded
async def get_entry(bus: EventBus, stream: str, entry_id: str) -> Entry:
    """The entry `entry_id` of `stream`, decoded; NotFound when it is not there."""
    await require_stream(bus, stream)
    found = await redis_of(bus).xrange(bus.keys.stream(stream), entry_id, entry_id)
    if not found:
        raise NotFound.naming(
            f"stream {stream!r} has no entry {entry_id} (trimmed, deleted, or never written; ",
            Param("dead_letters", "dead_letters()", value=stream),
            " lists dead letters)",
        )
    return decode_pair(found[0])


@dataclass(frozen=True, slots=True)
class DeliveryState:
    group: str
    # unread | pending | passed (acknowledged, or skipped by the group: created after the
    # entry, or reset past it) | dead-lettered | not for this group (targeted elsewhere)
    state: str
    consumer: str | None = None  # pending: who holds it,
    deliveries: int | None = None  # how often it was delivered,
    idle_s: float | None = None  # and since when
    dead_letter_id: str | None = None  # dead-lettered: the letter's id
    target: str | None = None  # not for this group: the group it is for


@guarded
async def delivery_states(bus: EventBus, stream: str, entry: Entry) -> list[DeliveryState]:
    """Where the entry stands in each group of the stream."""
    info = await stream_info(bus.redis, bus.keys, stream, dlq_scan=0)
    key = info.key
    dead = {d.group: d.id for d in await dead_letters(bus, stream, original_ids=[entry.id])}
    target = entry.envelope.target if entry.envelope else entry.fields.get("target")
    pipe = redis_of(bus).pipeline(transaction=False)
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
