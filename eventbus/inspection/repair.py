"""Repairs of consumer groups: move a group's position (replay or skip), delete a
consumer, delete a group. Each refuses what would lose data or hit a running worker,
unless told to go ahead, and takes ``dry_run``."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.bus import EventBus
from eventbus.errors import Param
from eventbus.inspection.common import NotFound, Refused, guarded, last_generated, pages, redis_of
from eventbus.inspection.streams import ConsumerDetail, consumer_detail, group_lag, require_group
from eventbus.scripts import SCRIPTS
from eventbus.streamid import parse_id
from eventbus.text import as_text


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
    async for batch in pages(bus, key, "(" + low, high, limit=cap):
        counted += len(batch)
    return counted, counted >= cap


@guarded
async def resolve_position(bus: EventBus, stream: str, to: str) -> str:
    """An id for `to`: ``beginning`` (0-0), ``end`` (the last id the stream generated),
    or an id, which must not lie beyond that (the group would miss new entries)."""
    if to == "beginning":
        return "0-0"
    last = await last_generated(bus, stream)
    if to == "end":
        return last
    if parse_id(to) > parse_id(last):
        raise Refused.naming(
            f"{to} lies beyond stream {stream!r}'s last entry ({last}): the group would skip "
            "every entry added until then; use ",
            Param("to", "to='end'", value="end"),
            " to skip to the newest entry",
        )
    return to


async def _entries_read_at(bus: EventBus, key: str, target: str, cap: int) -> int | None:
    """The group's entries-read counter at `target` (Redis 7: so its lag stays known after
    the move): every entry ever added, minus those still in the stream after `target`.
    None where Redis has no counters (6.2) or the count would be too long to take."""
    info = await redis_of(bus).xinfo_stream(key)
    added = info.get("entries-added")
    if added is None:
        return None
    # count up to the last id of this same reply: entries published meanwhile are in
    # neither figure (counting to "+" would subtract them without having added them)
    last = as_text(info["last-generated-id"])
    after, capped = await _count_between(bus, key, target, last, cap)
    return None if capped else max(0, int(added) - after)


@guarded
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
            after = await redis_of(bus).xpending_range(
                key, group, min="(" + target, max="+", count=min(cap, g.pending)
            )
            repending = len(after)
    elif parse_id(target) > parse_id(current):
        skip, capped = await _count_between(bus, key, current, target, cap)
    if not dry_run:
        entries_read = await _entries_read_at(bus, key, target, cap)
        await redis_of(bus).xgroup_setid(key, group, target, entries_read=entries_read)
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


@guarded
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
    consumers = {as_text(c["name"]): c for c in await redis_of(bus).xinfo_consumers(key, group)}
    if consumer not in consumers:
        names = ", ".join(sorted(consumers)) or "none"
        raise NotFound(f"group {group!r} has no consumer {consumer!r} (its consumers: {names})")
    pending = int(consumers[consumer]["pending"])
    idle_s = int(consumers[consumer]["idle"]) / 1000
    _check_removal(
        consumer,
        group,
        pending=pending,
        idle_s=idle_s,
        claim_to=claim_to,
        force=force,
        active_s=active_s,
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
        raise Refused(
            f"consumer {consumer!r} took new entries meanwhile (is it running?), so it was "
            f"not deleted{handed}: stop it, then run this again"
        )
    return ConsumerRemoval(consumer, pending, claim_to, claimed, True)


FORCE = Param("force", "force=True")


def _check_removal(
    consumer: str,
    group: str,
    *,
    pending: int,
    idle_s: float,
    claim_to: str | None,
    force: bool,
    active_s: float,
) -> None:
    """Refuse to delete a consumer owning pending entries (unless they go to `claim_to`),
    or one active in the last `active_s` seconds (unless `force`)."""
    if pending and claim_to is None:
        raise Refused.naming(
            f"consumer {consumer!r} owns {pending} pending entries of group {group!r}: "
            "deleting it would drop them from the group; pass ",
            Param("claim_to", "claim_to=<another consumer>", value="OTHER"),
            " to hand them over first (or let the workers reclaim them after their lease)",
        )
    if claim_to == consumer:
        raise Refused.naming(
            Param("claim_to", "claim_to"), " names the consumer being deleted; choose another"
        )
    if idle_s < active_s and not force:
        raise Refused.naming(
            f"consumer {consumer!r} was active {idle_s:.1f}s ago: it is probably a running "
            "worker, which would take new entries and re-create itself on its next read; "
            "stop it first (or pass ",
            FORCE,
            ")",
        )


@dataclass(frozen=True, slots=True)
class GroupRemoval:
    group: str
    pending: int  # entries read and not acknowledged: dropped with the group
    lag: int | None  # entries it has not read (None: Redis cannot tell)
    consumers: list[ConsumerDetail]
    live: list[str]  # consumers seen within `active_s`
    deleted: bool


@guarded
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
    listed = await redis_of(bus).xinfo_consumers(key, group)
    consumers = [consumer_detail(c) for c in listed if isinstance(c, dict)]
    live = [c.name for c in consumers if c.idle_s < active_s]
    last = await last_generated(bus, stream)
    lag = group_lag(g, last)
    if live and not force:
        raise Refused.naming(
            f"group {group!r} has consumers active in the last {active_s:.0f}s "
            f"({', '.join(live)}): a worker is probably running it, and would re-create it "
            "on its next read; stop it first (or pass ",
            FORCE,
            ")",
        )
    deleted = False
    if not dry_run:
        deleted = bool(int(await redis_of(bus).xgroup_destroy(key, group)))
    return GroupRemoval(group, g.pending, lag, consumers, live, deleted)


async def _claim_all(bus: EventBus, key: str, group: str, owner: str, to: str) -> int:
    claimed = 0
    while True:
        rows = await redis_of(bus).xpending_range(
            key, group, min="-", max="+", count=1000, consumername=owner
        )
        if not rows:
            return claimed
        ids = [as_text(r["message_id"]) for r in rows]
        done = await redis_of(bus).xclaim(key, group, to, 0, ids, justid=True)
        claimed += len(done)
        if not done:
            return claimed  # gone from the PEL meanwhile (acked): nothing left to move
