"""Dead letters: read them, redrive them to the group that failed them, purge them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventbus.bus import EventBus
from eventbus.errors import Param
from eventbus.inspection.common import Refused, guarded, int_or_none, pages, redis_of
from eventbus.inspection.decode import TEXT_LIMIT, Entry, decode_entry, field_text, pairs_of
from eventbus.scripts import SCRIPTS
from eventbus.status import stream_info
from eventbus.text import as_text

# how a letter is left out of a selection: the arguments of dead_letters()
IDS = Param("ids", "dead_letters(ids=...)")
GROUP = Param("group", "dead_letters(group=...)")


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
    raw_pairs = tuple((_name(k), v) for k, v in pairs_of(raw))
    text = {k: field_text(v) for k, v in raw_pairs if k.startswith("dlq_")}
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
        attempts=int_or_none(text.get("dlq_attempts")),
        time=text.get("dlq_time"),
        entry=decode_entry(stream_id or entry_id, original),
        raw=raw_pairs,
    )


def _name(value: Any) -> str:
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else str(value)


def _raw_name(name: str) -> bytes:
    return name.encode(errors="surrogateescape")


@guarded
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
    async for batch in pages(bus, bus.keys.dlq(stream), page=1000):
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


@guarded
async def redrive(
    bus: EventBus, stream: str, letters: Sequence[DeadLetter], *, dry_run: bool = False
) -> list[Redriven]:
    """Write each dead letter back to its stream, targeted at the group that failed it
    (others skip it), and delete it from the dead-letter stream, in one script per letter
    (the two keys share a hash slot): a letter redriven twice at once is written once.

    The whole selection is checked first (each names a group, and that group exists on
    the stream); nothing is changed when one fails the check."""
    info = await stream_info(redis_of(bus), bus.keys, stream, dlq_scan=0)
    _check_targets(stream, letters, {g.name for g in info.groups})
    plans = _plans(letters, await _originals_of_incomplete(bus, stream, letters))
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


def _check_targets(stream: str, letters: Sequence[DeadLetter], groups: set[str]) -> None:
    """Refuse the selection unless each letter names a group the stream has."""
    for dead in letters:
        if dead.group is None:
            raise Refused.naming(
                f"dead letter {dead.id} names no group (no dlq_group field), so it cannot "
                "be targeted; nothing was redriven (select the others with ",
                IDS,
                ")",
            )
        if dead.group not in groups:
            raise Refused.naming(
                f"dead letter {dead.id} is for group {dead.group!r}, which stream {stream!r} "
                "no longer has: every group would skip it; nothing was redriven (start a "
                "worker for that group first, or leave it out with ",
                GROUP,
                "/",
                IDS,
                ")",
            )


def _plans(
    letters: Sequence[DeadLetter], originals: dict[str, list[Any]]
) -> list[tuple[DeadLetter, list[Any]]]:
    """Each letter with the fields to write back (targeted at its group); refused, whole,
    when one has more than a script can write."""
    plans: list[tuple[DeadLetter, list[Any]]] = []
    for dead in letters:
        if dead.id in originals:
            fields = list(originals[dead.id])
        else:
            fields = [x for k, v in dead.original_fields for x in (_raw_name(k), v)]
        fields += ["target", dead.group]
        if len(fields) > MAX_REDRIVE_VALUES:
            raise Refused.naming(
                f"dead letter {dead.id}: its entry has {len(fields) // 2:,} fields, more than "
                f"a redrive can write ({MAX_REDRIVE_VALUES // 2:,}); nothing was redriven "
                "(leave it out with ",
                IDS,
                ", or copy it back by hand)",
            )
        plans.append((dead, fields))
    return plans


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
            found = await redis_of(bus).xrange(
                bus.keys.stream(stream), dead.stream_id, dead.stream_id
            )
        if not found:
            raise Refused.naming(
                f"dead letter {dead.id} does not hold its whole entry ({dead.omitted} were "
                f"not copied) and the original entry {dead.stream_id} is no longer in stream "
                f"{stream!r} (trimmed): it cannot be redriven; nothing was redriven (purge it, "
                "or leave it out with ",
                IDS,
                ")",
            )
        raw = found[0][1]
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=False)
        out[dead.id] = [x for k, v in pairs if k not in (b"target", "target") for x in (k, v)]
    return out


@guarded
async def purge_dead(
    bus: EventBus, stream: str, letters: Sequence[DeadLetter], *, dry_run: bool = False
) -> int:
    """Delete these dead letters; the count deleted (or that would be)."""
    if dry_run or not letters:
        return len(letters)
    ids = [d.id for d in letters]
    deleted = 0
    for i in range(0, len(ids), 1000):
        deleted += int(await redis_of(bus).xdel(bus.keys.dlq(stream), *ids[i : i + 1000]))
    return deleted


@guarded
async def dead_letter_traceback(bus: EventBus, stream: str, dead_id: str) -> str | None:
    found = await redis_of(bus).xrange(bus.keys.dlq(stream), dead_id, dead_id)
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
