"""What an app would run, and legal setups worth a second look (``eventbus check``).

    from eventbus.appcheck import check_app

    report = check_app(router, "notes-api")
    assert not report["warnings"], report["warnings"]

The report is plain JSON-compatible data (the structure ``eventbus check --json``
prints; docs/cli.md lists its keys). Declaration mistakes never get this far: they raise
ConfigurationError when the handler or schedule is declared.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from eventbus.asyncapi import app_streams
from eventbus.events import event_type_name, stream_of
from eventbus.handlers import HandlerSpec
from eventbus.router import Router
from eventbus.schedules.cron import next_tick
from eventbus.schedules.spec import ScheduleSpec, emitted_types

TICKS_SHOWN = 3
_GAP_SAMPLE = 10  # ticks looked at to find a schedule's shortest interval


def check_app(
    router: Router, service: str, *, now: datetime | None = None, ticks: int = TICKS_SHOWN
) -> dict[str, Any]:
    """``{"service", "handlers", "schedules", "warnings"}``: every handler (as the worker
    would run it under `service`) and schedule (with its next `ticks` ticks after `now`),
    sorted by group and name, and the warnings."""
    now = now or datetime.now(UTC)
    handlers = sorted(router.handlers, key=lambda h: h.group(service))
    schedules = sorted(router.schedules, key=lambda s: s.name)
    return {
        "service": service,
        "handlers": [_handler(h, service) for h in handlers],
        "schedules": [_schedule(s, now, ticks) for s in schedules],
        "warnings": [*_type_warnings(router), *_schedule_warnings(schedules, now)],
    }


def _handler(handler: HandlerSpec, service: str) -> dict[str, Any]:
    start = handler.start_from
    return {
        "name": handler.name,
        "group": handler.group(service),
        "streams": handler.streams,
        "event_types": {s: sorted(handler.types[s]) for s in handler.streams},
        "concurrency": handler.concurrency,
        "max_attempts": handler.max_attempts,
        "lease_s": handler.lease_s,
        "timeout_s": handler.timeout_s,
        "idempotent": handler.idempotency is not None,
        "sync": not handler.is_async,
        "start_from": start.isoformat() if isinstance(start, datetime) else start,
    }


def _schedule(schedule: ScheduleSpec, now: datetime, ticks: int) -> dict[str, Any]:
    emits = emitted_types(schedule)
    return {
        "name": schedule.name,
        "spec": schedule.spec,
        "tz": schedule.tz_name,
        "misfire": schedule.misfire,
        "misfire_grace_s": schedule.misfire_grace_s,
        "jitter_s": schedule.jitter_s,
        "emits": None
        if emits is None
        else [{"stream": stream_of(cls), "type": event_type_name(cls)} for cls in emits],
        "next_ticks": [_iso(t) for _, t in zip(range(ticks), _ticks(schedule, now), strict=False)],
    }


def _ticks(schedule: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    while True:
        after = next_tick(schedule.cron, schedule.tz, after)
        yield after


def _iso(tick: datetime) -> str:
    return tick.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _warning(code: str, subject: str, message: str) -> dict[str, str]:
    return {"code": code, "subject": subject, "message": message}


def _type_warnings(router: Router) -> list[dict[str, str]]:
    """Event types declared for a stream the app reads that none of its handlers take:
    every group of the app acknowledges such entries without running anything."""
    read = {stream for h in router.handlers for stream in h.types}
    taken = {(s, name) for h in router.handlers for s, types in h.types.items() for name in types}
    found = []
    for stream, types in sorted(app_streams(router).items()):
        if stream not in read:
            continue
        for name, cls in types.items():
            if (stream, name) not in taken:
                found.append(
                    _warning(
                        "unhandled-type",
                        f"stream {stream!r}",
                        f"event type {name!r} ({cls.__module__}.{cls.__qualname__}) is "
                        "declared for this stream but no handler of this app takes it: its "
                        "groups acknowledge such entries without handling them",
                    )
                )
    return found


def _schedule_warnings(schedules: list[ScheduleSpec], now: datetime) -> list[dict[str, str]]:
    found = []
    for schedule in schedules:
        sample = [t for _, t in zip(range(_GAP_SAMPLE), _ticks(schedule, now), strict=False)]
        gap = min((b - a).total_seconds() for a, b in itertools.pairwise(sample))
        subject = f"schedule {schedule.name!r}"
        if schedule.misfire == "all" and schedule.misfire_grace_s < gap:
            found.append(
                _warning(
                    "misfire-all-is-once",
                    subject,
                    f'misfire="all" with a misfire_grace of {_seconds(schedule.misfire_grace_s)}'
                    f", shorter than the {_seconds(gap)} between its ticks: at most one "
                    'missed tick is ever within the grace, as with misfire="once"; raise '
                    "misfire_grace to catch up several",
                )
            )
        if schedule.jitter_s >= gap:
            found.append(
                _warning(
                    "jitter-not-below-interval",
                    subject,
                    f"jitter of {_seconds(schedule.jitter_s)} is not shorter than the "
                    f"{_seconds(gap)} between its ticks: a tick's event may be published "
                    "after the next tick's; keep jitter well below the interval",
                )
            )
    return found


def _seconds(value: float) -> str:
    """``90s`` -> ``1m30s``, ``86400`` -> ``1d``: largest units first, zero parts left out."""
    if value < 60:
        return f"{value:g}s"
    rest, parts = round(value), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
