"""Safe trimming: age-based retention that never removes what a group still needs.

A group still needs its oldest pending entry (read, not acknowledged) and everything
after its last-delivered id (not read yet). `trim_stream` cuts with ``XTRIM MINID`` at
the oldest entry some group needs, or at the retention age, whichever keeps more.

The hard cap (``maxlen``, applied at XADD) cannot ask; `trim_stream` also reports how
many entries it cut before some group had read them (Redis ≥ 7 counts exactly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventbus.keys import Keys
from eventbus.redis_errors import client_errors
from eventbus.streamid import StreamId, format_id, parse_id, successor
from eventbus.streams import Stream
from eventbus.text import as_text


@dataclass(frozen=True, slots=True)
class GroupNeed:
    group: str
    needs_from: StreamId  # the oldest entry the group still needs
    why: str  # "pending" or "unread"
    # entries removed before the group read them (by the maxlen cap: safe trimming never
    # does); None where Redis cannot tell (6.2; a group created mid-stream)
    cut_unread: int | None


@dataclass(frozen=True, slots=True)
class TrimReport:
    stream: str
    length_before: int
    removed: int
    cut: StreamId | None  # the MINID used; None: nothing to trim
    reason: str  # why the cut stops where it stops
    groups: list[GroupNeed] = field(default_factory=list)


async def group_needs(client: Redis, key: str, info: dict[str, Any]) -> list[GroupNeed]:
    """What each group of the stream still needs (one XPENDING per group with pending).
    Raises eventbus errors only (`redis_errors`)."""
    with client_errors(client):
        return await _group_needs(client, key, info)


async def _group_needs(client: Redis, key: str, info: dict[str, Any]) -> list[GroupNeed]:
    removed = _removed_total(info)
    needs = []
    for g in await client.xinfo_groups(key):
        name = as_text(g["name"])
        needs_from = successor(parse_id(g["last-delivered-id"]))
        why = "unread"
        if int(g["pending"]):
            summary = await client.xpending(key, name)
            oldest = parse_id(summary["min"])
            if oldest < needs_from:
                needs_from, why = oldest, "pending"
        read = g.get("entries-read")
        if read is None and as_text(g["last-delivered-id"]) == "0-0":
            read = 0  # Redis reports nil for a group that has never read
        cut_unread = None
        if removed is not None and read is not None:
            cut_unread = max(0, removed - int(read))
        needs.append(GroupNeed(name, needs_from, why, cut_unread))
    return needs


def _removed_total(info: dict[str, Any]) -> int | None:
    added = info.get("entries-added")
    return None if added is None else int(added) - int(info["length"])


async def trim_stream(
    client: Redis,
    keys: Keys,
    settings: Stream,
    *,
    now_ms: int | None = None,
    dry_run: bool = False,
) -> TrimReport:
    """Trim `settings.name` to its retention, safely; `dry_run` computes without trimming.
    Raises eventbus errors only (`redis_errors`)."""
    with client_errors(client):
        return await _trim(client, keys, settings, now_ms=now_ms, dry_run=dry_run)


async def _trim(
    client: Redis, keys: Keys, settings: Stream, *, now_ms: int | None, dry_run: bool
) -> TrimReport:
    key = keys.stream(settings.name)
    try:
        info = await client.xinfo_stream(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return TrimReport(settings.name, 0, 0, None, "the stream does not exist")
        raise
    length = int(info["length"])
    needs = await _group_needs(client, key, info)
    cut, reason = _choose_cut(settings, needs, now_ms)
    first = info.get("first-entry")
    if cut is None or not first or cut <= parse_id(first[0]):
        return TrimReport(settings.name, length, 0, None, reason, needs)
    if dry_run:
        removed = await _count_before(client, key, format_id(cut))
    elif await _groups_changed(client, key, needs):
        # a group appeared (or went) since we looked: it may need older entries
        return TrimReport(settings.name, length, 0, None, "groups changed; next run", needs)
    else:
        removed = int(await client.xtrim(key, minid=format_id(cut), approximate=False))
    return TrimReport(settings.name, length, removed, cut, reason, needs)


async def _count_before(client: Redis, key: str, cut: str, page: int = 10_000) -> int:
    """Entries with ids below `cut`, counted in pages (a dry run must not load them all)."""
    counted, cursor = 0, "-"
    while True:
        batch: Any = await client.xrange(key, cursor, f"({cut}", count=page)
        counted += len(batch)
        if len(batch) < page:
            return counted
        cursor = "(" + as_text(batch[-1][0])


async def _groups_changed(client: Redis, key: str, needs: list[GroupNeed]) -> bool:
    names = {as_text(g["name"]) for g in await client.xinfo_groups(key)}
    return names != {n.group for n in needs}


def _choose_cut(
    settings: Stream, needs: list[GroupNeed], now_ms: int | None
) -> tuple[StreamId | None, str]:
    retention_s = settings.retention_s
    if retention_s is None:
        return None, "no retention configured: entries are kept (maxlen still caps)"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    age_cut: StreamId = (max(0, now - int(retention_s * 1000)), 0)
    if not needs:
        return age_cut, f"retention {retention_s:g}s (no consumer groups)"
    oldest = min(needs, key=lambda n: n.needs_from)
    if oldest.needs_from < age_cut:
        return oldest.needs_from, (
            f"group {oldest.group} still needs {format_id(oldest.needs_from)} "
            f"({oldest.why}); retention alone would cut at {format_id(age_cut)}"
        )
    return age_cut, f"retention {retention_s:g}s; every group is past it"
