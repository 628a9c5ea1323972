"""``eventbus top``: a live view of every stream and group, refreshed every second."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any, TextIO

from eventbus import inspection as ins
from eventbus.bus import EventBus
from eventbus.cli import output as o
from eventbus.cli.args import UsageError, command, duration, non_negative, option, switch
from eventbus.cli.connect import connected
from eventbus.cli.failures import cause_of, explain
from eventbus.errors import EventBusError, describe_error

ENTER, LEAVE, HOME = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l", "\x1b[H\x1b[2J"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, "top", top, [common])
    option(p, "--interval", duration, 1.0, metavar="DURATION", help="refresh period (default 1s)")
    until = "stop after N refreshes (default: until Ctrl-C)"
    option(p, "--iterations", non_negative, 0, metavar="N", help=until)
    switch(p, "--json", "print one JSON object per refresh (one per line) instead")


async def top(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """live view: rates, lag, pending, dead letters

    A live view of every stream and group under --prefix, refreshed every --interval:
    publish and consume rates, lag, pending, oldest pending age, dead letters,
    consumers. Ctrl-C quits. Rates need Redis 7 (they come from the entries-added and
    entries-read counters).
    """
    out = out or sys.stdout
    if args.interval <= 0:
        raise UsageError("--interval must be positive, e.g. 1s")
    screen = out.isatty() and not args.json
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with connected(args) as bus:
        if screen:
            out.write(ENTER)
        try:
            await _loop(bus, args, out, stop, screen)
        finally:
            if screen:
                out.write(LEAVE)
                out.flush()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return 0


async def _loop(
    bus: EventBus, args: argparse.Namespace, out: TextIO, stop: asyncio.Event, screen: bool
) -> None:
    before: ins.Snapshot | None = None
    done = 0
    while not stop.is_set():
        before = await _refresh(bus, args, out, before, screen)
        done += 1
        if args.iterations and done >= args.iterations:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.interval)


async def _refresh(
    bus: EventBus,
    args: argparse.Namespace,
    out: TextIO,
    before: ins.Snapshot | None,
    screen: bool,
) -> ins.Snapshot | None:
    """Show one refresh; the snapshot for the next one's rates (None after an error)."""
    try:
        now = await ins.snapshot(bus)
    except (EventBusError, OSError) as exc:  # a live view waits for Redis to come back
        _show_error(exc, out, screen=screen, bus=bus, as_json=args.json)
        return None
    if args.json:
        out.write(json.dumps(view_json(now, before)) + "\n")
    else:
        render(now, before, out, colour=screen and o.use_colour(out), title=_title(bus))
        if not screen:
            out.write("\n")
    out.flush()
    return now


def _show_error(
    exc: BaseException, out: TextIO, screen: bool, bus: EventBus, as_json: bool
) -> None:
    message = f"Redis unavailable ({explain(exc) or describe_error(cause_of(exc))}); retrying"
    if as_json:
        out.write(json.dumps({"at": round(time.time(), 3), "error": message}) + "\n")
    else:
        out.write((HOME if screen else "") + _title(bus) + "\n\n" + message + "\n")
    out.flush()


def _title(bus: EventBus) -> str:
    stamp = time.strftime("%H:%M:%S")
    return f"eventbus top — {bus.display_url} prefix {bus.keys.prefix!r} — {stamp} (Ctrl-C quits)"


def _rates(
    now: ins.Snapshot, before: ins.Snapshot | None
) -> tuple[dict[str, float | None], dict[tuple[str, str], float | None]]:
    if before is None:
        return {}, {}
    span = now.at - before.at
    published = {
        s: ins.rate(n, before.entries_added.get(s), span) for s, n in now.entries_added.items()
    }
    old = {(g.stream, g.group): g.entries_read for g in before.groups}
    consumed = {
        (g.stream, g.group): ins.rate(g.entries_read, old.get((g.stream, g.group)), span)
        for g in now.groups
    }
    return published, consumed


def _per_s(value: float | None, first: bool) -> str:
    if value is None:
        return "…" if first else "?"
    return f"{value:,.1f}"


def render(
    now: ins.Snapshot, before: ins.Snapshot | None, out: TextIO, *, colour: bool, title: str
) -> None:
    published, consumed = _rates(now, before)
    first = before is None
    if colour:
        out.write(HOME)
    out.write(o.paint(title, "bold", colour) + "\n\n")
    if not now.streams:
        out.write("no streams under this prefix yet\n")
        return
    dlq = {s.name: s.dlq_length for s in now.streams}
    rows: list[list[o.Cell]] = []
    for s in now.streams:
        dead: o.Cell = (o.count(dlq[s.name]), "red" if dlq[s.name] else None)
        rows.append(
            [
                s.name,
                "",
                _per_s(published.get(s.name), first),
                "",
                o.count(s.length),
                "",
                "",
                "",
                dead,
                "",
            ]
        )
        for g in (g for g in now.groups if g.stream == s.name):
            stuck = (g.oldest_pending_age_s or 0) > 60
            rows.append(
                [
                    "",
                    g.group,
                    "",
                    _per_s(consumed.get((g.stream, g.group)), first),
                    "",
                    ("?" if g.lag is None else o.count(g.lag), "yellow" if g.lag else None),
                    o.count(g.pending),
                    (o.ago(g.oldest_pending_age_s), "red" if stuck else None),
                    "",
                    # no consumers is a problem only with work waiting (a worker blocked on an
                    # empty stream may not be registered yet)
                    (
                        str(g.consumers),
                        "red" if g.consumers == 0 and (g.lag or g.pending) else None,
                    ),
                ]
            )
    headers = [
        "STREAM",
        "GROUP",
        "IN/S",
        "OUT/S",
        "LENGTH",
        "LAG",
        "PENDING",
        "OLDEST",
        "DLQ",
        "CONSUMERS",
    ]
    o.table(headers, rows, out, colour=colour, right=(2, 3, 4, 5, 6, 7, 8, 9))


def view_json(now: ins.Snapshot, before: ins.Snapshot | None) -> dict[str, Any]:
    published, consumed = _rates(now, before)
    return {
        "at": round(now.at, 3),
        "streams": [
            {
                "stream": s.name,
                "length": s.length,
                "dlq_length": s.dlq_length,
                "publish_rate": published.get(s.name),
                "groups": [
                    {
                        "group": g.group,
                        "consumers": g.consumers,
                        "pending": g.pending,
                        "lag": g.lag,
                        "oldest_pending_age_s": g.oldest_pending_age_s,
                        "consume_rate": consumed.get((g.stream, g.group)),
                    }
                    for g in now.groups
                    if g.stream == s.name
                ],
            }
            for s in now.streams
        ],
    }
