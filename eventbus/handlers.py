"""Handler declarations: what a subscribed function is, checked when it is declared."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import InitVar, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from eventbus.backoff import Backoff
from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.events import Event, event_type_name, is_event_class, stream_of
from eventbus.idempotency import DEFAULT_TTL, IdempotencyOptions, StoreErrorPolicy
from eventbus.keys import check_name

if TYPE_CHECKING:
    from eventbus.context import Context

HandlerFunc = Callable[..., Awaitable[None] | None]
StartFrom = Literal["new", "beginning"] | datetime
DEFAULT_LEASE = timedelta(seconds=30)


def _check_int(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        kind = "a positive int or None" if optional else "an int >= 1"
        raise ConfigurationError(f"{name} must be {kind}, got {value!r}")


def _check_start_from(start_from: object) -> None:
    if start_from not in ("new", "beginning") and not isinstance(start_from, datetime):
        raise ConfigurationError(
            f"start_from must be 'new', 'beginning' or a datetime, got {start_from!r}"
        )
    if isinstance(start_from, datetime) and start_from.tzinfo is None:
        raise ConfigurationError(
            "start_from datetime must be timezone-aware (e.g. datetime(..., tzinfo=UTC))"
        )


@dataclass(frozen=True, slots=True)
class HandlerSettings:
    """A handler's delivery options, as ``subscribe(...)`` takes them, with their defaults
    (written here only). Every field is checked when the object is built: a mistake
    raises ConfigurationError naming the field (and `what`, the handler). A Router's
    ``defaults=`` is one of these; ``subscribe`` options override it per handler."""

    group: str | None = None
    concurrency: int = 16
    max_attempts: int = 5
    backoff: Backoff | Duration = Backoff()
    lease: Duration = DEFAULT_LEASE
    timeout: Duration | None = None
    start_from: StartFrom = "new"
    idempotent: bool = False
    idempotency_ttl: Duration = DEFAULT_TTL
    idempotency_store: str | None = None
    on_store_error: StoreErrorPolicy = "fail_open"
    max_event_bytes: int | None = None
    what: InitVar[str] = "handler settings"

    def __post_init__(self, what: str) -> None:
        try:
            self._check()
        except ConfigurationError as exc:
            raise ConfigurationError(f"{what}: {exc}") from None
        self.idempotency(what)  # its own messages name `what`

    def _check(self) -> None:
        _check_int("max_event_bytes", self.max_event_bytes, optional=True)
        if self.group is not None:
            check_name("group", self.group)
        _check_int("concurrency", self.concurrency)
        _check_int("max_attempts", self.max_attempts)
        _check_start_from(self.start_from)
        if self.lease_s < 1:
            raise ConfigurationError("lease must be at least 1 second")
        if self.timeout is not None:
            seconds(self.timeout, name="timeout")
        Backoff.coerce(self.backoff)
        if not isinstance(self.idempotent, bool):
            raise ConfigurationError("idempotent must be True or False")

    @property
    def lease_s(self) -> float:
        return seconds(self.lease, name="lease")

    @property
    def timeout_s(self) -> float | None:
        return None if self.timeout is None else seconds(self.timeout, name="timeout")

    @property
    def backoff_policy(self) -> Backoff:
        return Backoff.coerce(self.backoff)

    def idempotency(self, what: str) -> IdempotencyOptions | None:
        """The idempotency options, when `idempotent`."""
        if not self.idempotent:
            return None
        return IdempotencyOptions.build(
            what,
            ttl=self.idempotency_ttl,
            store=self.idempotency_store,
            on_store_error=self.on_store_error,
        )


HANDLER_OPTIONS = tuple(f.name for f in fields(HandlerSettings))
IDEMPOTENCY_OPTIONS = ("idempotency_ttl", "idempotency_store", "on_store_error")


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A validated handler: the function, the event types it takes, its delivery options."""

    fn: HandlerFunc
    name: str
    group_override: str | None
    # stream -> type name -> class
    types: Mapping[str, Mapping[str, type[Event]]]
    is_async: bool
    wants_context: bool
    concurrency: int
    max_attempts: int
    backoff: Backoff
    lease_s: float
    timeout_s: float | None
    start_from: StartFrom
    idempotency: IdempotencyOptions | None = None
    # the largest payload this handler's worker decodes; None: the stream's, else 1 MiB
    max_event_bytes: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # True when `name` is the default `module.qualname` (no name= given)
    default_name: bool = False
    # the options as declared (the fields above are their checked, normalised form)
    settings: HandlerSettings = field(default_factory=HandlerSettings)

    @classmethod
    def build(
        cls,
        fn: HandlerFunc,
        *,
        name: str,
        types: Mapping[str, Mapping[str, type[Event]]],
        settings: HandlerSettings,
        wants_context: bool,
        default_name: bool,
        what: str,
    ) -> HandlerSpec:
        """A handler with the options of `settings` (already checked)."""
        return cls(
            fn=fn,
            name=name,
            group_override=settings.group,
            types=types,
            is_async=inspect.iscoroutinefunction(fn),
            wants_context=wants_context,
            concurrency=settings.concurrency,
            max_attempts=settings.max_attempts,
            backoff=settings.backoff_policy,
            lease_s=settings.lease_s,
            timeout_s=settings.timeout_s,
            start_from=settings.start_from,
            idempotency=settings.idempotency(what),
            max_event_bytes=settings.max_event_bytes,
            default_name=default_name,
            settings=settings,
        )

    def group(self, service: str) -> str:
        """The consumer group: ``group=``, else `default_group` (see events-and-handlers.md)."""
        return self.group_override or default_group(service, self.name, self.default_name)

    def legacy_group(self, service: str) -> str | None:
        """The group eventbus 0.1 named this handler, when that differs from `group()`."""
        old = None if self.group_override else f"{service}.{self.name}"
        return old if old != self.group(service) else None

    @property
    def streams(self) -> list[str]:
        return sorted(self.types)

    def describe(self) -> str:
        return f"handler {self.name!r}"

    def call(self, event: Event, ctx: Context | None) -> Awaitable[None] | None:
        if self.wants_context:
            return self.fn(event, ctx)
        return self.fn(event)


def default_group(service: str, name: str, default_name: bool) -> str:
    """``<service>.<name>``, except that a default name (``module.qualname``) whose first
    component is the service does not repeat it: module ``orders.handlers`` in service
    ``orders`` gives ``orders.handlers.fraud_check``, not ``orders.orders.handlers...``.

    Explicit ``name=`` values keep ``<service>.<name>``, as in eventbus 0.1, so the
    groups of handlers that were given a name never change.
    """
    if default_name and name.startswith(f"{service}."):
        return name
    return f"{service}.{name}"


def qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}.{qualname}".replace(".<locals>", "")


def positional_params(fn: Callable[..., Any], what: str) -> list[inspect.Parameter]:
    """The positional parameters of `fn`; rejects required keyword-only ones."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what}: cannot read its signature ({exc})") from None
    params = []
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p)
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise ConfigurationError(
                f"{what}: keyword-only parameter {p.name!r} has no default; "
                "handlers are called with (event) or (event, ctx)"
            )
    return params


def _annotation_types(fn: Callable[..., Any], param: inspect.Parameter, what: str) -> list[Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward reference: fall back to the raw annotation
        hints = {}
    annotation = hints.get(param.name, param.annotation)
    if annotation is inspect.Parameter.empty:
        raise ConfigurationError(
            f"{what}: parameter {param.name!r} has no type annotation; annotate it with the "
            "event class (e.g. `event: NoteCreated`) or pass the types to subscribe(...)"
        )
    if isinstance(annotation, str):
        raise ConfigurationError(
            f"{what}: annotation {annotation!r} of {param.name!r} cannot be resolved; import "
            "the event class at module level or pass the types to subscribe(...)"
        )
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return list(typing.get_args(annotation))
    return [annotation]


def resolve_types(
    fn: HandlerFunc, explicit: tuple[Any, ...], what: str
) -> dict[str, dict[str, type[Event]]]:
    """Event types a handler takes, by stream, from subscribe(...) args or the annotation."""
    params = positional_params(fn, what)
    if not 1 <= len(params) <= 2:
        raise ConfigurationError(
            f"{what}: takes {len(params)} positional parameters; a handler takes "
            "(event) or (event, ctx)"
        )
    candidates: list[Any] = []
    for item in explicit:
        origin = typing.get_origin(item)
        if origin is typing.Union or origin is types.UnionType:
            candidates.extend(typing.get_args(item))
        else:
            candidates.append(item)
    if not candidates:
        candidates = _annotation_types(fn, params[0], what)
    by_stream: dict[str, dict[str, type[Event]]] = {}
    for cls in candidates:
        if not is_event_class(cls):
            raise ConfigurationError(
                f"{what}: {cls!r} is not an Event subclass; subscribe to classes declared "
                "as `class X(Event, stream=...)`"
            )
        stream = stream_of(cls)
        if stream is None:
            raise ConfigurationError(
                f"{what}: event class {cls.__name__} has no stream; declare it as "
                f"`class {cls.__name__}(Event, stream='name')`"
            )
        by_stream.setdefault(stream, {})[event_type_name(cls)] = cls
    return by_stream
