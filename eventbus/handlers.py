"""Handler declarations: what a subscribed function is, checked when it is declared."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from eventbus.backoff import Backoff
from eventbus.errors import ConfigurationError
from eventbus.events import Event, event_type_name, is_event_class, stream_of
from eventbus.idempotency import IdempotencyOptions
from eventbus.keys import check_name

if TYPE_CHECKING:
    from eventbus.context import Context

HandlerFunc = Callable[..., Awaitable[None] | None]
StartFrom = Literal["new", "beginning"] | datetime


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

    def group(self, service: str) -> str:
        return self.group_override or f"{service}.{self.name}"

    @property
    def streams(self) -> list[str]:
        return sorted(self.types)

    def describe(self) -> str:
        return f"handler {self.name!r}"

    def call(self, event: Event, ctx: Context | None) -> Awaitable[None] | None:
        if self.wants_context:
            return self.fn(event, ctx)
        return self.fn(event)


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


def check_options(
    *,
    what: str,
    group: str | None,
    concurrency: int,
    max_attempts: int,
    start_from: object,
    max_event_bytes: object = None,
) -> None:
    if max_event_bytes is not None and (
        not isinstance(max_event_bytes, int)
        or isinstance(max_event_bytes, bool)
        or max_event_bytes < 1
    ):
        raise ConfigurationError(
            f"{what}: max_event_bytes must be a positive int or None, got {max_event_bytes!r}"
        )
    if group is not None:
        check_name("group", group)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(f"{what}: concurrency must be an int >= 1, got {concurrency!r}")
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise ConfigurationError(f"{what}: max_attempts must be an int >= 1, got {max_attempts!r}")
    if start_from not in ("new", "beginning") and not isinstance(start_from, datetime):
        raise ConfigurationError(
            f"{what}: start_from must be 'new', 'beginning' or a datetime, got {start_from!r}"
        )
    if isinstance(start_from, datetime) and start_from.tzinfo is None:
        raise ConfigurationError(
            f"{what}: start_from datetime must be timezone-aware (e.g. datetime(..., tzinfo=UTC))"
        )
