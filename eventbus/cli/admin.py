"""``eventbus dlq | group | trim``: act on dead letters, groups and retention, safely.

Every command that changes something takes ``--dry-run``; those that drop data a group
may still need (purging dead letters, skipping unread entries) ask first, unless
``--yes``, and refuse without a terminal to ask on.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from eventbus import inspection as ins
from eventbus.cli import output as o
from eventbus.cli.args import (
    UsageError,
    command,
    duration,
    option,
    position,
    positive,
    stream_id,
    switch,
)
from eventbus.cli.connect import connected
from eventbus.cli.inspect import render_entry
from eventbus.cli.loader import load_app
from eventbus.retention import GroupNeed, TrimReport, trim_stream
from eventbus.streamid import format_id
from eventbus.streams import Stream, StreamSettings

JSON_HELP = "print JSON (documented keys)"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    _dlq_parsers(sub, common)
    _group_parsers(sub, common)
    p = command(sub, "trim", trim, [common])
    p.add_argument("stream", metavar="STREAM")
    source = p.add_mutually_exclusive_group(required=True)
    keep = "keep entries younger than this (e.g. 7d); 0: keep none that every group is done with"
    option(source, "--retention", duration, None, metavar="DURATION", help=keep)
    source.add_argument("--app", metavar="APP", help="use the retention the app declares")
    switch(p, "--dry-run", "say what would go; remove nothing")
    switch(p, "--json", JSON_HELP)


def _dlq_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    dlq = command(
        sub,
        "dlq",
        None,
        help="dead letters: ls, show, redrive, purge",
        description="Dead letters of a stream: list them, show one, redrive (write back "
        "to the stream for the group that failed them), purge.",
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument("stream", metavar="STREAM")
    select.add_argument("--group", metavar="G", help="only dead letters of this group")

    p = command(actions, "ls", dlq_ls, [common, select])
    option(p, "--limit", positive, 100, metavar="N", help="at most N (default 100)")
    switch(p, "--json", JSON_HELP)

    p = command(actions, "show", dlq_show, [common])
    p.add_argument("stream", metavar="STREAM")
    which = "the dead letter's id (or else, the original entry's id)"
    p.add_argument("id", metavar="ID", type=stream_id, help=which)
    switch(p, "--json", JSON_HELP)

    for name, handler, what in (
        ("redrive", dlq_redrive, "write dead letters back, each for the group that failed it"),
        ("purge", dlq_purge, "delete dead letters (asks first unless --yes)"),
    ):
        p = command(actions, name, handler, [common, select], help=what, description=what)
        _selection(p.add_mutually_exclusive_group(required=True))
        switch(p, "--dry-run", "say what would happen; change nothing")
        if name == "purge":
            switch(p, "--yes", "do not ask for confirmation")


def _selection(which: Any) -> None:
    """--id, --original-id or --all: the dead letters a redrive or purge acts on."""
    for name, dest, what in (
        ("--id", "ids", "a dead letter's own id, in the dead-letter stream"),
        ("--original-id", "original_ids", "the id of a dead letter's original entry in STREAM"),
    ):
        which.add_argument(
            name,
            dest=dest,
            action="append",
            type=stream_id,
            metavar="ID",
            default=[],
            help=f"{what} (repeatable)",
        )
    switch(which, "--all", "every dead letter (of --group)")


def _group_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    group = command(
        sub,
        "group",
        None,
        help="consumer groups: reset (replay or skip), delete-consumer, delete",
        description="Repair consumer groups.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(actions, "reset", group_reset, [common])
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--to",
        required=True,
        type=position,
        metavar="ID|TIME|beginning|end",
        help="the new position: entries after it are delivered next",
    )
    switch(p, "--dry-run", "say what would change; change nothing")
    switch(p, "--yes", "do not ask before skipping entries")
    _delete_consumer_parser(actions, common)
    _group_delete_parser(actions, common)


def _delete_consumer_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    p = command(actions, "delete-consumer", group_delete_consumer, [common])
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("consumer", metavar="CONSUMER")
    p.add_argument("--claim-to", metavar="OTHER", help="give its pending entries to OTHER first")
    switch(p, "--force", "even if it was active in the last 30s (a running worker?)")
    switch(p, "--dry-run", "say what would change; change nothing")


def _group_delete_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    p = command(actions, "delete", group_delete, [common])
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("group", metavar="GROUP")
    switch(p, "--force", "even if a consumer was active in the last 30s")
    switch(p, "--dry-run", "say what would go; change nothing")
    switch(p, "--yes", "do not ask for confirmation")


def confirm(what: str, *, yes: bool, stdin: TextIO | None = None) -> None:
    """Go on if --yes, or the user answers y on a terminal; else raise UsageError.
    `what` states the consequence ("this deletes 3 dead letters for good")."""
    if yes:
        return
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise UsageError(f"{what}; pass --yes to go ahead (there is no terminal to ask on)")
    sys.stderr.write(f"{what}. Go ahead? [y/N] ")
    sys.stderr.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError("aborted; nothing changed")


# -- dlq --------------------------------------------------------------------------------


async def dlq_ls(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """list dead letters"""
    out = out or sys.stdout
    async with connected(args) as bus:
        await ins.require_stream(bus, args.stream, or_dead_letters=True)
        letters = await ins.dead_letters(bus, args.stream, group=args.group, limit=args.limit)
    if args.json:
        o.dump_json([d.as_json() for d in letters], out)
        return 0
    if not letters:
        out.write(
            f"no dead letters for {args.stream!r}"
            + (f" in group {args.group!r}" if args.group else "")
            + "\n"
        )
        return 0
    o.table(
        ["ID", "ORIGINAL ID", "TYPE", "GROUP", "REASON", "ATTEMPTS", "ERROR"],
        [
            [
                d.id,
                d.stream_id or "-",
                d.entry.type or "?",
                d.group or "-",
                (d.reason or "-", "red"),
                "-" if d.attempts is None else str(d.attempts),
                _short(d.error),
            ]
            for d in letters
        ],
        out,
        colour=o.use_colour(out),
        right=(5,),
    )
    return 0


def _one_line(text: str, width: int = 2000) -> str:
    """A dead letter's detail on one line: escaped (newlines too), clipped to `width`."""
    clipped = text if len(text) <= width else f"{text[:width]}… [{len(text):,} characters]"
    return o.safe(clipped)


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    line = text.splitlines()[0] if text.strip() else text
    return line if len(line) <= width else line[: width - 1] + "…"


async def dlq_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """one dead letter, in full"""
    out = out or sys.stdout
    async with connected(args) as bus:
        await ins.require_stream(bus, args.stream, or_dead_letters=True)
        # the dead letter's own id first; only if none has it, the original entry's id
        found = await ins.dead_letters(bus, args.stream, ids=[args.id], limit=1)
        if not found:
            found = await ins.dead_letters(bus, args.stream, original_ids=[args.id], limit=1)
        if not found:
            raise ins.NotFound(
                f"no dead letter {args.id} for stream {args.stream!r} "
                f"('eventbus dlq ls {args.stream}' lists them)"
            )
        dead = found[0]
        tb = await ins.dead_letter_traceback(bus, args.stream, dead.id)
    if args.json:
        o.dump_json(dead.as_json(traceback=tb), out)
        return 0
    colour = o.use_colour(out)
    head = f"dead letter {dead.id} of {args.stream} (original entry {dead.stream_id})"
    out.write(o.safe(head) + "\n")
    for label, value in (
        ("group", dead.group),
        ("handler", dead.handler),
        ("reason", dead.reason),
        ("attempts", dead.attempts),
        ("error", f"{dead.error_type}: {dead.error}" if dead.error_type else dead.error),
        ("moved at", dead.time),
    ):
        out.write(f"  {label:<9} {'-' if value is None else _one_line(str(value))}\n")
    out.write("\nevent:\n")
    render_entry(dead.entry, out, colour)
    if tb:
        out.write("\ntraceback (tail):\n" + o.safe(tb.rstrip(), lines=True) + "\n")
    return 0


async def _selected(bus: Any, args: argparse.Namespace) -> list[ins.DeadLetter]:
    await ins.require_stream(bus, args.stream, or_dead_letters=True)
    letters = await ins.dead_letters(
        bus, args.stream, group=args.group, ids=args.ids, original_ids=args.original_ids
    )
    missing = [i for i in args.ids if i not in {d.id for d in letters}]
    missing += [
        f"with original id {i}"
        for i in args.original_ids
        if i not in {d.stream_id for d in letters}
    ]
    if missing:
        raise ins.NotFound(
            f"no dead letter {', '.join(missing)} for stream {args.stream!r}"
            + (f" in group {args.group!r}" if args.group else "")
            + f" ('eventbus dlq ls {args.stream}' lists them: ID is the dead letter's "
            "own id, ORIGINAL ID its entry's id in the stream)"
        )
    return letters


async def dlq_redrive(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    async with connected(args) as bus:
        letters = await _selected(bus, args)
        done = await ins.redrive(bus, args.stream, letters, dry_run=args.dry_run)
    verb = "would redrive" if args.dry_run else "redrove"
    for r in done:
        if r.gone:
            out.write(f"{r.dead_letter_id} gone meanwhile (redriven or purged elsewhere)\n")
            continue
        arrow = f" -> {r.new_id}" if r.new_id else ""
        out.write(o.safe(f"{r.dead_letter_id}{arrow} for group {r.group}") + "\n")
    moved = sum(1 for r in done if not r.gone)
    out.write(f"{verb} {moved} dead letter(s) of {args.stream!r}\n")
    return 0


async def dlq_purge(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    async with connected(args) as bus:
        letters = await _selected(bus, args)
        if not letters:
            out.write("no dead letters to purge\n")
            return 0
        if not args.dry_run:
            confirm(
                f"this deletes {len(letters)} dead letter(s) of {args.stream!r} for good",
                yes=args.yes,
            )
        n = await ins.purge_dead(bus, args.stream, letters, dry_run=args.dry_run)
    out.write(
        f"{'would delete' if args.dry_run else 'deleted'} {n} dead letter(s) of {args.stream!r}\n"
    )
    return 0


# -- group ------------------------------------------------------------------------------


async def group_reset(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """move a group's position: replay or skip entries

    Move GROUP's last-delivered id (XGROUP SETID): back to deliver entries again (a
    replay; idempotent handlers skip what they did), forward to skip them (asks first
    unless --yes). Pending entries stay with their consumers.
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        plan = await ins.reset_group(bus, args.stream, args.group, args.to, dry_run=True)
        if not args.dry_run and plan.skip:
            confirm(
                f"group {args.group!r} would skip {_n(plan.skip, plan.capped)} unread "
                "entries, never delivering them",
                yes=args.yes,
            )
        if not args.dry_run and plan.repending:
            confirm(
                f"{plan.repending} of group {args.group!r}'s pending entries lie after "
                "the new position: reading them again takes them from their consumers "
                "and restarts their delivery counts (a poison entry gets fresh "
                "attempts)",
                yes=args.yes,
            )
        if not args.dry_run:
            plan = await ins.reset_group(bus, args.stream, args.group, plan.to_id)
    verb = "would move" if args.dry_run else "moved"
    out.write(f"{verb} group {plan.group} from {plan.from_id} to {plan.to_id}\n")
    if plan.redeliver:
        out.write(f"  {_n(plan.redeliver, plan.capped)} entries will be delivered again\n")
    if plan.skip:
        out.write(f"  {_n(plan.skip, plan.capped)} unread entries are skipped\n")
    if plan.repending:
        out.write(
            f"  {plan.repending} pending entries after it will be read again, their "
            "delivery counts restarting at 1\n"
        )
    if plan.pending - plan.repending:
        out.write(
            f"  {plan.pending - plan.repending} pending entries stay pending with their consumers\n"
        )
    return 0


def _n(n: int, capped: bool) -> str:
    return f"at least {n:,}" if capped else f"{n:,}"


async def group_delete_consumer(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """remove a consumer from a group

    Remove CONSUMER from GROUP. Refuses while it owns pending entries, unless --claim-to
    hands them to another consumer first (delivery counts kept).
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        r = await ins.delete_consumer(
            bus,
            args.stream,
            args.group,
            args.consumer,
            claim_to=args.claim_to,
            dry_run=args.dry_run,
            force=args.force,
        )
    prefix = "would delete" if args.dry_run else "deleted"
    claimed = f"; {r.claimed} pending entries handed to {r.claimed_to}" if r.claimed else ""
    out.write(f"{prefix} consumer {r.consumer} from group {args.group}{claimed}\n")
    return 0


async def group_delete(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """delete a group (a retired handler's, blocking trims)

    Delete GROUP from STREAM (XGROUP DESTROY) with its pending entries: what a renamed
    or retired handler leaves behind, which trimming waits on forever. Says what it
    drops (pending entries, lag, consumers) and asks first unless --yes. Refuses a group
    with a consumer active in the last 30s (a running worker would re-create it) unless
    --force.
    """
    out = out or sys.stdout
    async with connected(args) as bus:
        plan = await ins.delete_group(bus, args.stream, args.group, dry_run=True, force=args.force)
        drops = _group_drops(plan)
        if not args.dry_run:
            what = f"this deletes group {args.group!r} of {args.stream!r} for good ({drops})"
            confirm(what, yes=args.yes)
            plan = await ins.delete_group(bus, args.stream, args.group, force=args.force)
    if args.dry_run:
        out.write(f"would delete group {plan.group} of {args.stream}: {drops}\n")
    elif plan.deleted:
        out.write(f"deleted group {plan.group} of {args.stream}: {drops}\n")
    else:
        out.write(f"group {plan.group} of {args.stream} was gone already (deleted meanwhile)\n")
    return 0


def _group_drops(plan: ins.GroupRemoval) -> str:
    lag = "unknown lag" if plan.lag is None else f"{plan.lag:,} unread entries"
    live = f", {len(plan.live)} of them active" if plan.live else ""
    return f"{plan.pending:,} pending entries, {lag}, {len(plan.consumers)} consumer(s){live}"


# -- trim -------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Stream:
    if args.app is None:
        if args.retention == 0:
            return Stream(args.stream, retention=0.001)
        return Stream(args.stream, retention=args.retention)
    load_app(args.app)  # importing it declares its streams' settings
    settings = StreamSettings().get(args.stream)
    if settings.retention is not None:
        return settings
    raise UsageError(
        f"app {args.app!r} declares no retention for stream {args.stream!r}; "
        "pass --retention DURATION"
    )


async def trim(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """trim a stream safely, now (the janitor's trim)

    Remove entries older than the retention from STREAM, but never one a group has not
    read or acknowledged: the cut stops at the oldest entry any group still needs, and
    the output says which group that is. The retention comes from --retention, or from
    the stream's declaration in --app.
    """
    out = out or sys.stdout
    settings = _settings(args)
    async with connected(args) as bus:
        await ins.require_stream(bus, args.stream)
        report = await trim_stream(bus.redis, bus.keys, settings, dry_run=args.dry_run)
    if args.json:
        o.dump_json(_trim_json(report, args.dry_run), out)
        return 0
    verb = "would remove" if args.dry_run else "removed"
    out.write(
        f"{verb} {report.removed:,} of {report.length_before:,} entries from "
        f"{args.stream!r}"
        + (f" (cut at {format_id(report.cut)})" if report.cut else "")
        + f"\n  why it stops there: {report.reason}\n"
    )
    for need in report.groups:
        needs = f"group {need.group} needs entries from {format_id(need.needs_from)}"
        out.write(o.safe(f"  {needs} ({need.why})") + "\n")
    return 0


def _trim_json(report: TrimReport, dry_run: bool) -> dict[str, Any]:
    return {
        "stream": report.stream,
        "dry_run": dry_run,
        "length_before": report.length_before,
        "removed": report.removed,
        "cut": format_id(report.cut) if report.cut else None,
        "reason": report.reason,
        "groups": [_need_json(n) for n in report.groups],
    }


def _need_json(need: GroupNeed) -> dict[str, Any]:
    return {"group": need.group, "needs_from": format_id(need.needs_from), "why": need.why}
