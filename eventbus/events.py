"""Typed events: msgspec Structs bound to a stream and a CloudEvents ``type``.

    class NoteCreated(Event, stream="notes"):
        note_id: str

The class keyword ``stream=`` binds the event to a stream (subclasses inherit
it); ``type=`` overrides the type name written to the envelope (the class name
by default). Events are frozen.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, dataclass_transform

import msgspec

from eventbus.errors import ConfigurationError
from eventbus.keys import check_name
from eventbus.streams import Stream, declare

_registry_lock = threading.Lock()
# stream -> type name -> class
_registry: dict[str, dict[str, type[Event]]] = {}


@dataclass_transform(field_specifiers=(msgspec.field,), frozen_default=True)
class EventMeta(msgspec.StructMeta):
    """Metaclass accepting ``stream=`` and ``type=`` class keywords."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        /,
        *,
        stream: str | Stream | None = None,
        type: str | None = None,
        **kwargs: Any,
    ) -> EventMeta:
        kwargs.setdefault("frozen", True)
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        if isinstance(stream, Stream):
            declare(stream)
            stream = stream.name
        if stream is not None:
            check_name("stream", stream)
            cls.__eb_stream__ = stream  # type: ignore[attr-defined]
        if type is not None and (not isinstance(type, str) or not type):
            raise ConfigurationError(f"event class {name}: type= must be a non-empty string")
        cls.__eb_type__ = type or name  # type: ignore[attr-defined]
        if cls.__eb_stream__ is not None:  # type: ignore[attr-defined]
            _register(cls)  # type: ignore[arg-type]
        return cls


class Event(msgspec.Struct, metaclass=EventMeta, frozen=True):
    """Base class of every event. Subclass with ``stream="name"``."""

    __eb_stream__: ClassVar[str | None] = None
    __eb_type__: ClassVar[str] = "Event"

    def __init_subclass__(
        cls,
        *,
        stream: str | Stream | None = None,
        type: str | None = None,
        **kwargs: Any,
    ) -> None:
        # The keywords are consumed by EventMeta; this signature is for type checkers.
        super().__init_subclass__(**kwargs)


def _register(cls: type[Event]) -> None:
    stream = cls.__eb_stream__
    assert stream is not None
    with _registry_lock:
        types = _registry.setdefault(stream, {})
        existing = types.get(cls.__eb_type__)
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ConfigurationError(
                f"event type {cls.__eb_type__!r} on stream {stream!r} is declared twice: "
                f"by {_qualified(existing)} and by {_qualified(cls)}; give one of them "
                "another type= or stream="
            )
        types[cls.__eb_type__] = cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def event_type_name(cls: type[Event]) -> str:
    return cls.__eb_type__


def stream_of(cls: type[Event]) -> str | None:
    return cls.__eb_stream__


def lookup(stream: str, type_name: str) -> type[Event] | None:
    """The event class registered for `type_name` on `stream`, if any."""
    return _registry.get(stream, {}).get(type_name)


def registered(stream: str) -> dict[str, type[Event]]:
    """Every event class declared for `stream` so far in this process, by type name."""
    with _registry_lock:
        return dict(_registry.get(stream, {}))


def is_event_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Event) and obj is not Event
