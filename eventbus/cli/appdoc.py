"""``eventbus asyncapi`` (an app's AsyncAPI document) and ``eventbus check`` (what an app
would run, and warnings). Both read the app only: no Redis."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from eventbus.appcheck import check_app
from eventbus.asyncapi import asyncapi_document
from eventbus.cli.args import UsageError, command, switch
from eventbus.cli.loader import load_app, service_name
from eventbus.cli.output import ago, dump_json, paint, table, use_colour
from eventbus.keys import DEFAULT_PREFIX
from eventbus.schedules.cron import zone

EXIT_WARNINGS = 1


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``asyncapi`` and ``check``; `common` (connection options) is not needed here."""
    app = argparse.ArgumentParser(add_help=False)
    app.add_argument("app", metavar="APP", help="'package.module:router' or 'package.module'")
    app.add_argument(
        "--service", help="service name, the group prefix (default: APP's top-level package)"
    )

    doc = command(sub, "asyncapi", asyncapi_command, [app])
    doc.add_argument(
        "--prefix",
        default=os.environ.get("EVENTBUS_PREFIX", DEFAULT_PREFIX),
        help=f"key prefix of the channel addresses (default {DEFAULT_PREFIX!r}, $EVENTBUS_PREFIX)",
    )
    doc.add_argument(
        "--app-version",
        default="0.0.0",
        metavar="VERSION",
        help="info.version of the document (default 0.0.0)",
    )
    doc.add_argument(
        "--format",
        choices=["json", "yaml"],
        help="json (default) or yaml (needs PyYAML); default yaml for an --output "
        "ending in .yaml or .yml",
    )
    doc.add_argument(
        "--output", "-o", metavar="FILE", help="write the document to FILE instead of stdout"
    )
    doc.set_defaults(log_level="WARNING")

    check = command(sub, "check", check_command, [app])
    switch(check, "--json", "print JSON (stable keys)")
    switch(check, "--strict", "exit with status 1 on warnings")
    check.set_defaults(log_level="WARNING")


# -- asyncapi -------------------------------------------------------------------------


async def asyncapi_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """print an app's AsyncAPI 3.0.0 document (no Redis needed)

    Print the AsyncAPI 3.0.0 document of APP: a channel per stream, a receive operation
    per handler group, a send operation per schedule whose events are known, message
    headers (the envelope) and payload JSON Schemas. The same app gives the same
    document, to commit and diff in CI.
    """
    fmt = args.format or _format_of(args.output)
    router = load_app(args.app)
    document = asyncapi_document(
        router,
        args.service or service_name(args.app),
        prefix=args.prefix,
        version=args.app_version,
    )
    text = render(document, fmt)
    if args.output is None:
        (out or sys.stdout).write(text)
        return 0
    try:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return 0


def _format_of(output: str | None) -> str:
    return "yaml" if output and output.endswith((".yaml", ".yml")) else "json"


def render(document: dict[str, Any], fmt: str) -> str:
    """The document as JSON (2-space indent) or YAML, keys in the document's order."""
    if fmt == "yaml":
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise UsageError(
                "--format yaml needs PyYAML, which is not installed: use --format json, "
                "or pip install pyyaml"
            ) from None
        return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
    buffer = io.StringIO()
    dump_json(document, buffer)
    return buffer.getvalue()


# -- check ----------------------------------------------------------------------------


async def check_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """load an app and show what would run: handlers, schedules, warnings

    Load APP (declaration mistakes fail with one line, exit status 2) and print its
    handlers as the worker would run them, its schedules with their next ticks, and
    warnings about legal but questionable setups. Exit status 0, or 1 with --strict when
    there are warnings.
    """
    out = out or sys.stdout
    router = load_app(args.app)
    report = {"app": args.app, **check_app(router, args.service or service_name(args.app))}
    if args.json:
        dump_json(report, out)
    else:
        print_report(report, out, colour=use_colour(out))
    return EXIT_WARNINGS if args.strict and report["warnings"] else 0


def print_report(report: dict[str, Any], out: TextIO, *, colour: bool = False) -> None:
    handlers, schedules = report["handlers"], report["schedules"]
    out.write(
        f"app {report['app']}, service {report['service']}: "
        f"{_plural(len(handlers), 'handler')}, {_plural(len(schedules), 'schedule')}\n"
    )
    if handlers:
        out.write("\n")
        _handler_table(handlers, out, colour)
    if schedules:
        out.write("\n")
        _schedule_table(schedules, out, colour)
    out.write("\n")
    warnings = report["warnings"]
    if not warnings:
        out.write(paint("no warnings", "green", colour) + "\n")
        return
    out.write(paint(f"{_plural(len(warnings), 'warning')}:", "yellow", colour) + "\n")
    for warning in warnings:
        out.write(f"  {warning['subject']}: {warning['message']} [{warning['code']}]\n")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _handler_table(handlers: list[dict[str, Any]], out: TextIO, colour: bool) -> None:
    rows = [
        [
            h["group"],
            ", ".join(h["streams"]),
            ", ".join(sorted({t for types in h["event_types"].values() for t in types})),
            str(h["concurrency"]),
            str(h["max_attempts"]),
            ago(h["lease_s"]),
            ago(h["timeout_s"]),
            "yes" if h["idempotent"] else "no",
            "sync" if h["sync"] else "async",
        ]
        for h in handlers
    ]
    headers = [
        "GROUP",
        "STREAMS",
        "EVENT TYPES",
        "CONCURRENCY",
        "MAX_ATTEMPTS",
        "LEASE",
        "TIMEOUT",
        "IDEMPOTENT",
        "KIND",
    ]
    table(headers, rows, out, colour=colour, right=(3, 4, 5, 6))


def _schedule_table(schedules: list[dict[str, Any]], out: TextIO, colour: bool) -> None:
    rows = [
        [
            s["name"],
            s["spec"],
            s["tz"],
            s["misfire"],
            _emits(s["emits"]),
            ", ".join(_local(tick, s["tz"]) for tick in s["next_ticks"]),
        ]
        for s in schedules
    ]
    headers = ["SCHEDULE", "SPEC", "TZ", "MISFIRE", "EMITS", "NEXT TICKS (in TZ)"]
    table(headers, rows, out, colour=colour)


def _emits(emits: list[dict[str, str]] | None) -> str:
    if emits is None:
        return "? (not annotated)"
    if not emits:
        return "-"
    return ", ".join(f"{e['type']} ({e['stream']})" for e in emits)


def _local(tick: str, tz: str) -> str:
    return datetime.fromisoformat(tick).astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S")
