"""``eventbus schedules``: every schedule's state, read from Redis."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from eventbus.bus import EventBus
from eventbus.cli import output as o
from eventbus.cli.connect import bus_for, reach
from eventbus.cli.loader import load_app
from eventbus.schedules.cron import next_tick
from eventbus.text import as_text

COLUMNS = (
    "name",
    "spec",
    "tz",
    "next_tick",
    "last_tick",
    "last_fired_at",
    "fires",
    "duplicates",
    "skipped",
    "errors",
)


async def schedule_rows(bus: EventBus, app: str | None) -> list[dict[str, Any]]:
    """One row per schedule known to Redis (or declared by `app`), keys as COLUMNS."""
    rows: dict[str, dict[str, Any]] = {}
    pattern = bus.keys.schedule("*")
    # hashes only: a key of another type under the pattern is not a schedule's state
    async for raw_key in bus.redis.scan_iter(match=pattern, count=500, _type="hash"):
        raw: dict[bytes, bytes] = await bus.redis.hgetall(raw_key)  # type: ignore[assignment]
        state = {as_text(k): as_text(v) for k, v in raw.items()}
        name = as_text(raw_key)[len(bus.keys.schedule("")) :]
        rows[name] = _row(name, state)
    if app is not None:
        now = datetime.now(UTC)
        for spec in load_app(app).schedules:
            row = rows.setdefault(spec.name, _row(spec.name, {}))
            row.update(spec=spec.spec, tz=spec.tz_name)
            upcoming = next_tick(spec.cron, spec.tz, now)
            row["next_tick"] = upcoming.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [rows[name] for name in sorted(rows)]


def _row(name: str, state: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "spec": state.get("spec"),
        "tz": state.get("tz"),
        "next_tick": state.get("next_tick"),
        "last_tick": state.get("last_tick"),
        "last_fired_at": state.get("last_fired_at"),
        "fires": _count(state.get("fires")),
        "duplicates": _count(state.get("duplicates")),
        "skipped": _count(state.get("skipped")),
        "errors": _count(state.get("errors")),
        "last_error": state.get("last_error"),
    }


def _count(value: str | None) -> int | None:
    """A counter of the state hash: 0 when absent, None when it holds no number."""
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    if not rows:
        out.write("no schedules found (none has run yet under this prefix)\n")
        return
    cells = [[o.safe(_cell(row[c])) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    out.write("\n")
    footer = "times in UTC"
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({footer}; errors: {sum(r['errors'] or 0 for r in rows)})\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        return value[:19].replace("T", " ")  # to the second, UTC
    return str(value)


async def schedules(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    bus = bus_for(args)
    try:
        await reach(bus, args.connect_timeout)
        rows = await schedule_rows(bus, args.app)
    finally:
        await bus.aclose()
    if args.json:
        o.dump_json(rows, out)
    else:
        print_table(rows, out)
    return 0
