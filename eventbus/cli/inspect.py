"""``eventbus streams | info | pending | tail | show | publish``: look at the bus."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from typing import Any, TextIO

import msgspec

from eventbus import inspection as ins
from eventbus.bus import EventBus
from eventbus.cli import output as o
from eventbus.cli.args import (
    UsageError,
    command,
    duration,
    id_or_time,
    non_negative,
    option,
    positive,
    stream_id,
    switch,
)
from eventbus.cli.connect import connected
from eventbus.cli.loader import load_app
from eventbus.envelope import field_list
from eventbus.errors import EventBusError
from eventbus.events import registered
from eventbus.keys import check_name
from eventbus.scripts import SCRIPTS
from eventbus.streams import DEFAULT_DEDUP_WINDOW_S
from eventbus.text import as_text


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    json_opt = argparse.ArgumentParser(add_help=False)
    switch(json_opt, "--json", "print JSON (documented keys)")
    parents = [common, json_opt]
    command(sub, "streams", streams, parents)
    p = command(sub, "info", info, parents)
    p.add_argument("stream", metavar="STREAM")
    _pending_parser(sub, parents)
    _tail_parser(sub, parents)
    p = command(sub, "show", show, parents)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("id", metavar="ID", type=stream_id)
    _publish_parser(sub, common)


def _pending_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = command(sub, "pending", pending, parents)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--consumer", metavar="C", help="only this consumer's entries")
    idle = "only entries idle at least this long (e.g. 30s, 5m)"
    option(p, "--idle", duration, 0.0, metavar="DURATION", help=idle)
    option(p, "--limit", positive, 100, metavar="N", help="at most N entries (default 100)")


def _tail_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = command(sub, "tail", tail, parents)
    p.add_argument("stream", metavar="STREAM")
    option(p, "-n", non_negative, 10, metavar="N", help="how many events (default 10)")
    p.add_argument(
        "--from",
        dest="start",
        type=id_or_time,
        metavar="ID|TIME",
        help="the first N events from this id or ISO time (not the last N)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="then print new events live")
    types = "only events of this type (repeatable)"
    p.add_argument("--type", dest="types", action="append", default=[], metavar="T", help=types)
    p.add_argument("--key", metavar="K", help="only events with this key")


def _publish_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, "publish", publish, [common])
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("--data", required=True, metavar="JSON", help="the payload, a JSON object")
    p.add_argument("--key", metavar="K", help="idempotency key (and the event's key)")
    header = "a header (repeatable)"
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help=header)
    p.add_argument(
        "--app",
        metavar="APP",
        help="check --data against the event class APP declares for STREAM and TYPE "
        "(strictly: every required field, right types, no unknown field)",
    )
    window = "how long --key is remembered (default 10m; 0: no dedup)"
    option(p, "--dedup-window", duration, DEFAULT_DEDUP_WINDOW_S, metavar="DURATION", help=window)


# -- streams ----------------------------------------------------------------------------


async def streams(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """list streams: length, age, groups, lag, dead letters

    Every stream under --prefix: length, first and last entry with their age, consumer
    groups, total lag, dead letters, memory.
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        rows = await ins.list_streams(bus)
    if args.json:
        o.dump_json([_stream_json(s) for s in rows], out)
        return 0
    if not rows:
        out.write(f"no streams under prefix {args.prefix!r}\n")
        return 0
    colour = o.use_colour(out)
    o.table(
        ["STREAM", "LENGTH", "FIRST", "LAST", "GROUPS", "LAG", "DLQ", "MEMORY"],
        [
            [
                s.name,
                o.count(s.length),
                _aged(s.first_id),
                _aged(s.last_id),
                str(s.groups),
                _lag_cell(s.lag),
                _dlq_cell(s.dlq_length),
                o.human_bytes(s.memory_bytes),
            ]
            for s in rows
        ],
        out,
        colour=colour,
        right=(1, 4, 5, 6, 7),
    )
    return 0


def _stream_json(s: ins.StreamSummary) -> dict[str, Any]:
    return {
        "stream": s.name,
        "key": s.key,
        "length": s.length,
        "first_id": s.first_id,
        "first_age_s": _round(s.first_age_s),
        "last_id": s.last_id,
        "last_age_s": _round(s.last_age_s),
        "groups": s.groups,
        "lag": s.lag,
        "dlq_length": s.dlq_length,
        "memory_bytes": s.memory_bytes,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _aged(entry_id: str | None) -> str:
    return "-" if entry_id is None else f"{entry_id} ({o.ago(o.age_of_id(entry_id))} ago)"


def _lag_cell(lag: int | None) -> o.Cell:
    if lag is None:
        return ("?", "dim")
    return (o.count(lag), "yellow" if lag else None)


def _dlq_cell(n: int, *, exact: bool = True) -> o.Cell:
    return (o.count(n) if exact else f"≥{o.count(n)}", "red" if n else None)


# -- info -------------------------------------------------------------------------------


async def info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """a stream, its groups and their consumers

    The stream, then each consumer group (consumers, pending, lag, last-delivered id,
    oldest pending age, dead letters) and each consumer (pending, idle).
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        detail = await ins.stream_detail(bus, args.stream)
    if args.json:
        o.dump_json(_detail_json(detail), out)
        return 0
    s = detail.stream
    colour = o.use_colour(out)
    out.write(o.paint(f"stream {s.name}", "bold", colour) + f"  ({s.key})\n")
    out.write(
        f"  length {o.count(s.length)}, added {o.count(s.entries_added)}, "
        f"memory {o.human_bytes(detail.memory_bytes)}\n"
        f"  first {_aged(s.first_id)}\n  last  {_aged(s.last_id)}\n"
        f"  dead letters {o.count(s.dlq_length)}\n"
    )
    if not detail.groups:
        out.write("\nno consumer groups\n")
        return 0
    out.write("\n")
    o.table(
        ["GROUP", "CONSUMERS", "PENDING", "LAG", "LAST DELIVERED", "OLDEST PENDING", "DEAD"],
        [
            [
                g.name,
                str(len(g.consumers)),
                o.count(g.pending),
                _lag_cell(g.lag),
                g.last_delivered_id,
                o.ago(g.oldest_pending_age_s),
                _dlq_cell(g.dead_letters, exact=detail.dead_letters_exact),
            ]
            for g in detail.groups
        ],
        out,
        colour=colour,
        right=(1, 2, 3, 5, 6),
    )
    consumers = [(g.name, c) for g in detail.groups for c in g.consumers]
    if consumers:
        out.write("\n")
        o.table(
            ["GROUP", "CONSUMER", "PENDING", "IDLE"],
            [[g, c.name, o.count(c.pending), o.ago(c.idle_s)] for g, c in consumers],
            out,
            colour=colour,
            right=(2, 3),
        )
    return 0


def _detail_json(detail: ins.StreamDetail) -> dict[str, Any]:
    s = detail.stream
    return {
        "stream": s.name,
        "key": s.key,
        "length": s.length,
        "entries_added": s.entries_added,
        "first_id": s.first_id,
        "last_id": s.last_id,
        "dlq_length": s.dlq_length,
        "memory_bytes": detail.memory_bytes,
        "dead_letters_exact": detail.dead_letters_exact,
        "groups": [
            {
                "group": g.name,
                "pending": g.pending,
                "lag": g.lag,
                "last_delivered_id": g.last_delivered_id,
                "entries_read": g.entries_read,
                "oldest_pending_id": g.oldest_pending_id,
                "oldest_pending_age_s": _round(g.oldest_pending_age_s),
                "dead_letters": g.dead_letters,
                "consumers": [
                    {
                        "consumer": c.name,
                        "pending": c.pending,
                        "idle_s": c.idle_s,
                        "inactive_s": c.inactive_s,
                    }
                    for c in g.consumers
                ],
            }
            for g in detail.groups
        ],
    }


# -- pending ----------------------------------------------------------------------------


async def pending(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """a group's pending entries (read, not acknowledged)

    A group's pending entries, oldest first: id, consumer, idle time, deliveries, event
    type.
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        rows = await ins.pending_entries(
            bus,
            args.stream,
            args.group,
            consumer=args.consumer,
            min_idle_s=args.idle,
            limit=args.limit,
        )
    if args.json:
        o.dump_json([dataclasses.asdict(p) for p in rows], out)  # its fields, in order
        return 0
    if not rows:
        out.write(f"group {args.group!r} has no pending entries matching\n")
        return 0
    o.table(
        ["ID", "CONSUMER", "IDLE", "DELIVERIES", "TYPE"],
        [
            [
                p.id,
                p.consumer,
                o.ago(p.idle_s),
                (str(p.deliveries), "yellow" if p.deliveries > 1 else None),
                ("(gone from the stream)", "dim") if p.gone else p.type or ("(no type)", "red"),
            ]
            for p in rows
        ],
        out,
        colour=o.use_colour(out),
        right=(2, 3),
    )
    return 0


# -- tail and show ----------------------------------------------------------------------


SHOWN_CHARS = 10_000  # of a payload's (or fields') JSON on one line of human output
SHOWN_HEADERS = 20
SHOWN_VALUE = 200  # characters of an envelope attribute or header on the head line


def _line(text: str, limit: int = SHOWN_CHARS) -> str:
    """One line of output: escaped, and clipped to `limit` characters with the size said."""
    if len(text) > limit:
        text = f"{text[:limit]}… [{len(text):,} characters in all; --json shows more]"
    return o.safe(text)


def render_entry(entry: ins.Entry, out: TextIO, colour: bool) -> None:
    """One entry as a header line and its payload (JSON), or its raw fields; whatever it
    holds is escaped and clipped (nothing from Redis reaches the terminal raw)."""
    env = entry.envelope
    head = [o.paint(o.safe(entry.id), "blue", colour), o.iso_of_id(entry.id) or ""]
    if env is not None:
        head.append(o.paint(_line(env.type, SHOWN_VALUE), "bold", colour))
        head += [
            f"{name}={_line(value, SHOWN_VALUE)}"
            for name, value in (
                ("key", env.key),
                ("source", env.source),
                ("event", env.id),
                ("target", env.target),
            )
            if value
        ]
        headers = list(env.headers.items())
        head += [
            f"h:{_line(k, SHOWN_VALUE)}={_line(v, SHOWN_VALUE)}" for k, v in headers[:SHOWN_HEADERS]
        ]
        if len(headers) > SHOWN_HEADERS:
            head.append(f"(+{len(headers) - SHOWN_HEADERS:,} more headers)")
    out.write("  ".join(head) + "\n")
    if entry.error:
        out.write("  " + o.paint(f"undecodable: {_line(entry.error)}", "red", colour) + "\n")
    if entry.payload is not None:
        out.write("  " + _line(o.json_text(entry.payload)) + "\n")
    elif env is None or entry.error:
        out.write("  fields: " + _line(o.json_text(entry.fields)) + "\n")
    if entry.fields_omitted:
        out.write(f"  (+{entry.fields_omitted:,} more fields not shown)\n")


async def tail(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """decoded events, newest last; -f to follow

    Decoded events of STREAM (envelope and payload), newest last. With --follow, keep
    printing new events until Ctrl-C.
    """
    out = out or sys.stdout
    colour = o.use_colour(out)
    async with connected(args) as bus:
        found = await ins.tail(
            bus, args.stream, count=args.n, start=args.start, types=args.types, key=args.key
        )
        for entry in found.entries:
            _emit(entry, args.json, out, colour)
        out.flush()
        if found.limit_reached:
            sys.stderr.write(
                f"eventbus: scanned 100,000 entries and found {len(found.entries)} of the "
                f"{args.n} asked for; narrow the search with --from\n"
            )
        if args.follow:
            await _follow(bus, args, found.follow_after, out, colour)
    return 0


def _emit(entry: ins.Entry, as_json: bool, out: TextIO, colour: bool) -> None:
    if as_json:  # one object per line, for jq and friends
        out.write(o.json_text(entry.as_json()) + "\n")
    else:
        render_entry(entry, out, colour)


async def _follow(
    bus: EventBus, args: argparse.Namespace, after: str, out: TextIO, colour: bool
) -> None:
    """Print new entries until SIGINT/SIGTERM, then return (exit status 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def pump() -> None:
        async for entry in ins.follow(
            bus, args.stream, after=after, types=args.types, key=args.key
        ):
            _emit(entry, args.json, out, colour)
            out.flush()

    task = asyncio.create_task(pump())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for t in (task, stopper):
            t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    failed = task.exception() if task.done() and not task.cancelled() else None
    if failed is not None:
        raise failed


async def show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """one entry, decoded, and its state in each group

    One entry of STREAM, decoded, with where it stands in each group: unread, pending
    (consumer, deliveries), acknowledged, or dead-lettered.
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        entry = await ins.get_entry(bus, args.stream, args.id)
        states = await ins.delivery_states(bus, args.stream, entry)
    if args.json:
        o.dump_json({**entry.as_json(), "groups": [dataclasses.asdict(s) for s in states]}, out)
        return 0
    colour = o.use_colour(out)
    render_entry(entry, out, colour)
    if not states:
        out.write("\nno consumer groups\n")
        return 0
    out.write("\n")
    o.table(
        ["GROUP", "STATE", "CONSUMER", "DELIVERIES", "IDLE"],
        [
            [
                s.group,
                (_state_text(s), _STATE_COLOUR.get(s.state)),
                s.consumer or "-",
                "-" if s.deliveries is None else str(s.deliveries),
                o.ago(s.idle_s),
            ]
            for s in states
        ],
        out,
        colour=colour,
        right=(3, 4),
    )
    return 0


_STATE_COLOUR = {"passed": "green", "pending": "yellow", "dead-lettered": "red", "unread": "blue"}


def _state_text(s: ins.DeliveryState) -> str:
    if s.dead_letter_id:
        return f"dead-lettered as {s.dead_letter_id}"
    if s.target:
        return f"not for this group (targeted at {s.target})"
    if s.state == "passed":
        return "passed (acknowledged, or skipped)"
    return s.state


# -- publish ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise UsageError(f"--data holds {name}, which JSON does not allow; use null or a number")


def _payload(text: str) -> bytes:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--data is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            'quote it for the shell, e.g. --data \'{"title": "hi"}\''
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"--data must be a JSON object (an event's fields), got a {type(value).__name__}"
        )
    return msgspec.json.encode(value)


def _typed_payload(app: str, stream: str, type_name: str, data: bytes) -> bytes:
    """`data` checked against the event class `app` declares for `stream` and `type_name`,
    encoded as the library would publish it (defaults filled in)."""
    load_app(app)  # importing it declares its event classes
    known = registered(stream)
    cls = known.get(type_name)
    if cls is None:
        names = ", ".join(sorted(known)) or "none"
        raise UsageError(
            f"app {app!r} declares no event type {type_name!r} for stream {stream!r} "
            f"(its types there: {names}); check TYPE and STREAM"
        )
    fields = msgspec.structs.fields(cls)
    unknown = sorted(set(msgspec.json.decode(data)) - {f.encode_name for f in fields})
    if unknown:
        raise UsageError(
            f"--data has field(s) {', '.join(unknown)} that {type_name} does not declare "
            f"(its fields: {', '.join(f.encode_name for f in fields) or 'none'})"
        )
    try:
        event = msgspec.json.decode(data, type=cls, strict=True)
    except msgspec.ValidationError as exc:
        raise UsageError(f"--data is not a valid {type_name}: {exc}") from None
    return msgspec.json.encode(event)


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--header {item!r}: expected NAME=VALUE")
        headers[name] = value
    return headers


async def publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """write an event from the command line

    Write an event of TYPE to STREAM in the standard envelope. DATA must be a JSON
    object; with --key, the idempotent producer writes it once per key within the dedup
    window.
    """
    out = out or sys.stdout
    if not args.type.strip():
        raise UsageError("TYPE must not be empty")
    check_name("stream", args.stream)
    data = _payload(args.data)
    if args.app is not None:
        data = _typed_payload(args.app, args.stream, args.type, data)
    fields = field_list(
        type_name=args.type,
        data=data,
        source="eventbus-cli",
        key=args.key,
        headers=_headers(args.header) or None,
    )
    async with connected(args) as bus:
        key = bus.keys.stream(args.stream)
        if args.key and args.dedup_window > 0:
            reply: Any = await bus.wire.script(
                SCRIPTS.publish_dedup,
                [key, bus.keys.pub(args.stream, args.key)],
                [max(1, int(args.dedup_window * 1000)), 0, *fields],
            )
            entry_id, duplicate = as_text(reply[0]), bool(int(reply[1]))
        else:
            client: Any = bus.redis
            entry = dict(zip(fields[::2], fields[1::2], strict=True))
            entry_id, duplicate = as_text(await client.xadd(key, entry)), False
    if duplicate:
        out.write(
            f"{entry_id} (duplicate: key {args.key!r} was published within the window; "
            "nothing written)\n"
        )
    else:
        out.write(f"{entry_id}\n")
    return 0


__all__ = ["EventBusError", "add_parsers", "render_entry"]
