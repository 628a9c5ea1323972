"""Schedule declarations, checked when declared: ``@router.schedule(...)``."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.events import Event, is_event_class, stream_of
from eventbus.keys import check_name
from eventbus.schedules.cron import CronSpec, validate_cron, zone

Misfire = Literal["once", "skip", "all"]
Emitted = Event | list[Event] | None
ScheduleFunc = Callable[[datetime], Emitted | Awaitable[Emitted]]
DEFAULT_GRACE = timedelta(minutes=5)
MAX_CATCH_UP = 100  # misfire="all" fires at most this many missed ticks


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule."""

    name: str
    cron: CronSpec
    tz_name: str
    tz: tzinfo
    misfire: Misfire
    misfire_grace_s: float
    jitter_s: float
    fn: ScheduleFunc
    is_async: bool
    # the event of a `Router.schedule_event` schedule, published on every tick
    event: Event | None = None

    @property
    def spec(self) -> str:
        return self.cron.source

    @property
    def dedup_window_s(self) -> float:
        """How long a tick's key is remembered: longer than any replica could still fire
        it (the grace), with a floor of 10 minutes."""
        return max(600.0, 2 * self.misfire_grace_s + self.jitter_s + 60)


def build_schedule(
    fn: Any,
    *,
    spec: str,
    name: str | None,
    tz: str,
    misfire: str,
    misfire_grace: Duration,
    jitter: Duration | None,
) -> ScheduleSpec:
    label = name or _default_name(fn)
    what = f"schedule {label!r}"
    if not isinstance(label, str):
        raise ConfigurationError(f"schedule name must be a str, got {label!r}")
    check_name("schedule", label)
    try:
        cron = validate_cron(spec)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    try:
        tzinfo_ = zone(tz)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    if misfire not in ("once", "skip", "all"):
        raise ConfigurationError(
            f"{what}: misfire must be 'once', 'skip' or 'all', got {misfire!r}"
        )
    grace = seconds(misfire_grace, name=f"{what}: misfire_grace")
    jitter_s = 0.0 if jitter is None else seconds(jitter, name=f"{what}: jitter")
    _check_function(fn, what)
    return ScheduleSpec(
        name=label,
        cron=cron,
        tz_name=tz,
        tz=tzinfo_,
        misfire=misfire,  # type: ignore[arg-type]
        misfire_grace_s=grace,
        jitter_s=jitter_s,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
    )


def _default_name(fn: Any) -> str:
    return str(getattr(fn, "__name__", "")).replace("_", "-") or repr(fn)


def _check_function(fn: Any, what: str) -> None:
    if not callable(fn) or isinstance(fn, type):
        raise ConfigurationError(f"{what}: schedule() decorates a function, got {fn!r}")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what}: cannot read its signature ({exc})") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    required_kw = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if not positional or len(required) > 1 or required_kw:
        raise ConfigurationError(
            f"{what}: the function takes ({', '.join(p.name for p in params)}); a schedule "
            "function takes one argument, the tick: def f(tick: datetime) -> Event | None"
        )


def emitted_types(schedule: ScheduleSpec) -> list[type[Event]] | None:
    """The event classes a schedule publishes, as far as its declaration tells: the event
    of a `schedule_event`, else the function's return annotation (``-> CleanupOldNotes``,
    ``-> A | B | None``, ``-> list[A]``). None when that is unknown (no annotation, or one
    naming something other than Event classes with a stream)."""
    if schedule.event is not None:
        return [type(schedule.event)]
    try:
        hints = typing.get_type_hints(schedule.fn)
    except Exception:  # an unresolvable forward reference: unknown, like no annotation
        return None
    if "return" not in hints:
        return None
    found: list[type[Event]] = []
    if not _collect_events(hints["return"], found):
        return None
    return sorted(set(found), key=lambda cls: (stream_of(cls) or "", cls.__eb_type__))


def _collect_events(annotation: Any, found: list[type[Event]]) -> bool:
    """Add the Event classes `annotation` names to `found`; False if it names anything a
    schedule function cannot return."""
    if annotation is None or annotation is type(None):
        return True
    if is_event_class(annotation):
        found.append(annotation)
        return stream_of(annotation) is not None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType or origin is list:
        return all(_collect_events(arg, found) for arg in typing.get_args(annotation))
    return False


def emitted(value: Any, what: str) -> list[Event]:
    """Normalise what a schedule function returned; a wrong type is a clear error."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, Event) or not is_event_class(type(item)):
            raise ConfigurationError(
                f"{what}: returned {type(item).__name__}; a schedule function returns an "
                "Event, a list of Events, or None"
            )
    return list(items)
