"""Every stream's and group's figures at one moment, and rates between two moments (the
live view, ``eventbus top``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eventbus.bus import EventBus
from eventbus.inspection.common import age_of, guarded, lag_of, redis_of
from eventbus.inspection.streams import StreamSummary, list_streams, stream_names
from eventbus.text import as_text


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


@guarded
async def snapshot(bus: EventBus) -> Snapshot:
    """All figures of every stream under the prefix: SCAN, then two pipelined rounds."""
    names = await stream_names(bus)
    summaries = await list_streams(bus) if names else []
    pipe = redis_of(bus).pipeline(transaction=False)
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
            lag=lag_of(g, last_ids.get(stream)),
            entries_read=_entries_read(g),
            oldest_pending_age_s=age_of(oldest.get((stream, as_text(g["name"]))), now),
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
    pipe = redis_of(bus).pipeline(transaction=False)
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
