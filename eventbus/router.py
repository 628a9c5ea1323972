"""Routers collect handler declarations: ``@router.subscribe(...)``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Never, TypeVar, overload

from eventbus.backoff import Backoff
from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.events import Event
from eventbus.handlers import (
    HandlerFunc,
    HandlerSpec,
    StartFrom,
    check_options,
    qualified_name,
    resolve_types,
)
from eventbus.idempotency import DEFAULT_TTL, IdempotencyOptions, StoreErrorPolicy
from eventbus.keys import check_name
from eventbus.schedules.spec import DEFAULT_GRACE, Misfire, ScheduleSpec, build_schedule

F = TypeVar("F", bound=HandlerFunc)
S = TypeVar("S", bound=Callable[..., Any])

SUBSCRIBE_OPTIONS = (
    "name",
    "group",
    "concurrency",
    "max_attempts",
    "backoff",
    "lease",
    "timeout",
    "start_from",
    "idempotent",
    "idempotency_ttl",
    "idempotency_store",
    "on_store_error",
    "max_event_bytes",
)
IDEMPOTENCY_OPTIONS = ("idempotency_ttl", "idempotency_store", "on_store_error")
DEFAULT_LEASE = timedelta(seconds=30)


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
    """A set of handlers. Include routers into one another to compose an app."""

    def __init__(self) -> None:
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
        concurrency: int = 16,
        max_attempts: int = 5,
        backoff: Backoff | Duration = Backoff(),
        lease: Duration = DEFAULT_LEASE,
        timeout: Duration | None = None,
        start_from: StartFrom = "new",
        idempotent: bool = False,
        idempotency_ttl: Duration = DEFAULT_TTL,
        idempotency_store: str | None = None,
        on_store_error: StoreErrorPolicy = "fail_open",
        max_event_bytes: int | None = None,
        **unknown: Never,
    ) -> Callable[[F], F]: ...

    def subscribe(self, *event_types: Any, **options: Any) -> Any:
        """Declare a handler. Event types come from the arguments or the first
        parameter's annotation (a class or a union of classes).

        Options: ``name`` (default ``module.qualname``), ``group`` (default
        ``<service>.<name>``), ``concurrency`` (16), ``max_attempts`` (5),
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
        name = options.pop("name", None) or qualified_name(fn)
        what = f"handler {name!r}"
        check_name("handler", name)
        known = {k: options.pop(k) for k in SUBSCRIBE_OPTIONS if k in options}
        _unknown_options(what, options, SUBSCRIBE_OPTIONS)
        group = known.get("group")
        concurrency = known.get("concurrency", 16)
        max_attempts = known.get("max_attempts", 5)
        start_from = known.get("start_from", "new")
        check_options(
            what=what,
            group=group,
            concurrency=concurrency,
            max_attempts=max_attempts,
            start_from=start_from,
            max_event_bytes=known.get("max_event_bytes"),
        )
        types = resolve_types(fn, event_types, what)
        params = inspect.signature(fn).parameters
        positional = [
            p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        lease_s = seconds(known.get("lease", DEFAULT_LEASE), name=f"{what}: lease")
        if lease_s < 1:
            raise ConfigurationError(f"{what}: lease must be at least 1 second")
        timeout = known.get("timeout")
        idempotency = _idempotency(what, known)
        return HandlerSpec(
            fn=fn,
            name=name,
            group_override=group,
            types=types,
            is_async=inspect.iscoroutinefunction(fn),
            wants_context=len(positional) == 2,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=Backoff.coerce(known.get("backoff", Backoff())),
            lease_s=lease_s,
            timeout_s=None if timeout is None else seconds(timeout, name=f"{what}: timeout"),
            start_from=start_from,
            idempotency=idempotency,
            max_event_bytes=known.get("max_event_bytes"),
        )

    def _add(self, spec: HandlerSpec) -> None:
        group_id = spec.group_override or spec.name
        for existing in self._handlers.values():
            if (existing.group_override or existing.name) == group_id and existing is not spec:
                raise ConfigurationError(
                    f"handler {spec.name!r}: group {group_id!r} is already used by handler "
                    f"{existing.name!r}; every handler needs its own group (pass name= or group=)"
                )
        self._handlers[spec.name] = spec


def _idempotency(what: str, known: dict[str, Any]) -> IdempotencyOptions | None:
    idempotent = known.get("idempotent", False)
    if not isinstance(idempotent, bool):
        raise ConfigurationError(f"{what}: idempotent must be True or False")
    given = [k for k in IDEMPOTENCY_OPTIONS if k in known]
    if not idempotent:
        if given:
            raise ConfigurationError(
                f"{what}: {given[0]} only applies with idempotent=True; add idempotent=True"
            )
        return None
    return IdempotencyOptions.build(
        what,
        ttl=known.get("idempotency_ttl", DEFAULT_TTL),
        store=known.get("idempotency_store"),
        on_store_error=known.get("on_store_error", "fail_open"),
    )


def _is_plain_function(obj: object) -> bool:
    return callable(obj) and not isinstance(obj, type) and inspect.isroutine(obj)


default_router = Router()


@overload
def subscribe(fn: F, /) -> F: ...


@overload
def subscribe(
    *event_types: Any,
    name: str | None = None,
    group: str | None = None,
    concurrency: int = 16,
    max_attempts: int = 5,
    backoff: Backoff | Duration = Backoff(),
    lease: Duration = DEFAULT_LEASE,
    timeout: Duration | None = None,
    start_from: StartFrom = "new",
    idempotent: bool = False,
    idempotency_ttl: Duration = DEFAULT_TTL,
    idempotency_store: str | None = None,
    on_store_error: StoreErrorPolicy = "fail_open",
    max_event_bytes: int | None = None,
    **unknown: Never,
) -> Callable[[F], F]: ...


def subscribe(*event_types: Any, **options: Any) -> Any:
    """`Router.subscribe` on the module-level default router."""
    return default_router.subscribe(*event_types, **options)
