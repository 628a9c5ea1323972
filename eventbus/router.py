"""Routers collect handler declarations: ``@router.subscribe(...)``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Never, TypeVar, overload

from eventbus.backoff import Backoff
from eventbus.durations import Duration
from eventbus.errors import ConfigurationError
from eventbus.events import Event
from eventbus.handlers import (
    DEFAULT_LEASE,
    HANDLER_OPTIONS,
    IDEMPOTENCY_OPTIONS,
    HandlerFunc,
    HandlerSettings,
    HandlerSpec,
    StartFrom,
    qualified_name,
    resolve_types,
)
from eventbus.idempotency import StoreErrorPolicy
from eventbus.keys import check_name
from eventbus.schedules.spec import DEFAULT_GRACE, Misfire, ScheduleSpec, build_schedule

F = TypeVar("F", bound=HandlerFunc)
S = TypeVar("S", bound=Callable[..., Any])

SUBSCRIBE_OPTIONS = ("name", *HANDLER_OPTIONS)
__all__ = ["DEFAULT_LEASE", "SUBSCRIBE_OPTIONS", "Router", "default_router", "subscribe"]


# names other frameworks use for our options
_ALIASES = {
    "max_retry": "max_attempts",
    "max_retries": "max_attempts",
    "retries": "max_attempts",
    "attempts": "max_attempts",
    "workers": "concurrency",
    "parallelism": "concurrency",
    "prefetch": "concurrency",
    "max_concurrency": "concurrency",
    "consumer_group": "group",
    "group_name": "group",
    "visibility_timeout": "lease",
    "ack_wait": "lease",
    "ack_timeout": "lease",
    "retry_backoff": "backoff",
    "start": "start_from",
    "offset": "start_from",
    "dedupe": "idempotent",
    "dedup": "idempotent",
    "exactly_once": "idempotent",
    "idempotency_key_ttl": "idempotency_ttl",
    "dedup_ttl": "idempotency_ttl",
}


def _unknown_options(what: str, unknown: dict[str, Any], known: Iterable[str]) -> None:
    if not unknown:
        return
    name = next(iter(unknown))
    known = list(known)
    close = [_ALIASES[name]] if name in _ALIASES else difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"{what}: unknown option {name!r}{hint} (known options: {', '.join(known)})"
    )


class Router:
    """A set of handlers. Include routers into one another to compose an app.

    `defaults` (a HandlerSettings) are the options of the handlers declared on this
    router where ``subscribe`` does not give them; without it, HandlerSettings' own."""

    def __init__(self, *, defaults: HandlerSettings | None = None) -> None:
        if defaults is not None and not isinstance(defaults, HandlerSettings):
            raise ConfigurationError(
                f"Router: defaults must be a HandlerSettings, got {defaults!r}"
            )
        if defaults is not None and defaults.group is not None:
            raise ConfigurationError(
                "Router: defaults cannot set group (every handler needs its own group)"
            )
        self.defaults = HandlerSettings() if defaults is None else defaults
        self._handlers: dict[str, HandlerSpec] = {}
        self._schedules: dict[str, ScheduleSpec] = {}

    @property
    def handlers(self) -> list[HandlerSpec]:
        return list(self._handlers.values())

    @property
    def schedules(self) -> list[ScheduleSpec]:
        return list(self._schedules.values())

    def schedule(
        self,
        spec: str,
        *,
        name: str | None = None,
        tz: str = "UTC",
        misfire: Misfire = "once",
        misfire_grace: Duration = DEFAULT_GRACE,
        jitter: Duration | None = None,
    ) -> Callable[[S], S]:
        """Declare a cron schedule: the function gets each tick (an aware datetime in
        `tz`) and returns the Event(s) to publish, or None.

            @router.schedule("0 3 * * *", name="cleanup-old-notes")
            def cleanup(tick: datetime) -> CleanupOldNotes:
                return CleanupOldNotes(older_than_days=30)

        `spec` has 5 fields, or 6 with seconds first; `misfire` is "once" (the latest
        missed tick, within `misfire_grace`, 5 min), "skip" or "all"; `jitter` delays
        each replica's publish by up to that much. Mistakes raise ConfigurationError now.
        """

        def decorate(fn: S) -> S:
            self._add_schedule(
                build_schedule(
                    fn,
                    spec=spec,
                    name=name,
                    tz=tz,
                    misfire=misfire,
                    misfire_grace=misfire_grace,
                    jitter=jitter,
                )
            )
            return fn

        return decorate

    def schedule_event(
        self,
        spec: str,
        event: Event,
        *,
        name: str,
        tz: str = "UTC",
        misfire: Misfire = "once",
        misfire_grace: Duration = DEFAULT_GRACE,
        jitter: Duration | None = None,
    ) -> None:
        """Declare a schedule that publishes the same `event` on every tick."""
        if not isinstance(event, Event) or type(event).__eb_stream__ is None:
            raise ConfigurationError(f"schedule {name!r}: {event!r} is not an Event with a stream")

        def fixed(tick: datetime) -> Event:
            return event

        fixed.__name__ = name
        built = build_schedule(
            fixed,
            spec=spec,
            name=name,
            tz=tz,
            misfire=misfire,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )
        self._add_schedule(dataclasses.replace(built, event=event))

    def _add_schedule(self, spec: ScheduleSpec) -> None:
        existing = self._schedules.get(spec.name)
        if existing is not None and existing is not spec:
            raise ConfigurationError(
                f"schedule {spec.name!r} is declared twice; give each schedule its own name="
            )
        self._schedules[spec.name] = spec

    @overload
    def subscribe(self, fn: F, /) -> F: ...

    @overload
    def subscribe(
        self,
        *event_types: Any,
        name: str | None = None,
        group: str | None = None,
        concurrency: int = ...,
        max_attempts: int = ...,
        backoff: Backoff | Duration = ...,
        lease: Duration = ...,
        timeout: Duration | None = None,
        start_from: StartFrom = ...,
        idempotent: bool = ...,
        idempotency_ttl: Duration = ...,
        idempotency_store: str | None = None,
        on_store_error: StoreErrorPolicy = ...,
        max_event_bytes: int | None = None,
        **unknown: Never,
    ) -> Callable[[F], F]: ...

    def subscribe(self, *event_types: Any, **options: Any) -> Any:
        """Declare a handler. Event types come from the arguments or the first
        parameter's annotation (a class or a union of classes).

        Options: ``name`` (default ``module.qualname``), ``group`` (default
        ``<service>.<name>``, not repeating the service when a default name starts with
        it: docs/events-and-handlers.md), ``concurrency`` (16), ``max_attempts`` (5),
        ``backoff`` (a Backoff or the initial delay), ``lease`` (30 s),
        ``timeout`` (None), ``start_from`` ("new", "beginning" or a datetime),
        ``idempotent`` (False; with ``idempotency_ttl`` (24 h), ``idempotency_store`` (a
        Redis URL; default the stream's own) and ``on_store_error`` ("fail_open")),
        ``max_event_bytes`` (the largest payload decoded; default the stream's, else
        1 MiB: a larger entry is dead-lettered unread).
        """
        if len(event_types) == 1 and not options and _is_plain_function(event_types[0]):
            fn = event_types[0]
            self._add(self._build(fn, (), {}))
            return fn

        def decorate(fn: F) -> F:
            self._add(self._build(fn, event_types, options))
            return fn

        return decorate

    def include(self, other: Router) -> None:
        """Add every handler and schedule of `other` to this router."""
        for spec in other.handlers:
            self._add(spec)
        for schedule in other.schedules:
            self._add_schedule(schedule)

    def _build(
        self, fn: HandlerFunc, event_types: tuple[Any, ...], options: dict[str, Any]
    ) -> HandlerSpec:
        if not callable(fn):
            raise ConfigurationError(f"subscribe() decorates a function, got {fn!r}")
        given_name = options.pop("name", None)
        name = given_name or qualified_name(fn)
        what = f"handler {name!r}"
        check_name("handler", name)
        known = {k: options.pop(k) for k in HANDLER_OPTIONS if k in options}
        _unknown_options(what, options, SUBSCRIBE_OPTIONS)
        settings = self._settings(what, known)
        types = resolve_types(fn, event_types, what)
        params = inspect.signature(fn).parameters
        positional = [
            p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        return HandlerSpec.build(
            fn,
            name=name,
            types=types,
            settings=settings,
            wants_context=len(positional) == 2,
            default_name=not given_name,
            what=what,
        )

    def _settings(self, what: str, known: dict[str, Any]) -> HandlerSettings:
        """The router's defaults with the options `subscribe` gave."""
        if known.get("idempotent", self.defaults.idempotent) is False:
            given = [k for k in IDEMPOTENCY_OPTIONS if k in known]
            if given:
                raise ConfigurationError(
                    f"{what}: {given[0]} only applies with idempotent=True; add idempotent=True"
                )
        return dataclasses.replace(self.defaults, what=what, **known)

    def _add(self, spec: HandlerSpec) -> None:
        group_id = spec.group_override or spec.name
        for existing in self._handlers.values():
            if (existing.group_override or existing.name) == group_id and existing is not spec:
                raise ConfigurationError(
                    f"handler {spec.name!r}: group {group_id!r} is already used by handler "
                    f"{existing.name!r}; every handler needs its own group (pass name= or group=)"
                )
        self._handlers[spec.name] = spec


def _is_plain_function(obj: object) -> bool:
    return callable(obj) and not isinstance(obj, type) and inspect.isroutine(obj)


default_router = Router()


# `Router.subscribe` on the module-level default router
subscribe = default_router.subscribe
