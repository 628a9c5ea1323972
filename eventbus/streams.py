"""Per-stream settings: a hard cap, an age-based retention, a publisher dedup window.

    notes = Stream("notes", maxlen=1_000_000, retention=timedelta(days=7))

    class NoteCreated(Event, stream=notes): ...

Declaring the settings with the stream puts them where the event types are, so every
process that imports the events (publishers, workers) applies the same ones. A bus may
override them per deployment: ``EventBus.from_url(..., streams=[Stream("notes", ...)])``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from eventbus.durations import seconds
from eventbus.errors import ConfigurationError
from eventbus.keys import check_name

DEFAULT_DEDUP_WINDOW_S = 600.0


@dataclass(frozen=True, slots=True)
class Stream:
    """A stream's settings.

    - ``maxlen``: approximate hard cap applied at every XADD (``MAXLEN ~``); None: no cap.
      It cuts without asking whether a group has read what it cuts (counted and logged
      by the worker's janitor when it does).
    - ``retention``: entries older than this are trimmed by the worker's janitor, but
      never one that some group has not yet read or acknowledged. None: kept.
    - ``dedup_window``: how long ``publish(event, key=k)`` remembers ``k`` (default
      10 min); 0 turns publisher-side dedup off for the stream.
    - ``max_event_bytes``: the largest payload a worker decodes from this stream
      (default None: the handler's own limit, else 1 MiB, the publishers' default);
      a larger entry is dead-lettered unread, with its size as the reason.
    """

    name: str
    maxlen: int | None = None
    retention: float | timedelta | None = None
    dedup_window: float | timedelta = DEFAULT_DEDUP_WINDOW_S
    max_event_bytes: int | None = None

    def __post_init__(self) -> None:
        check_name("stream", self.name)
        if self.max_event_bytes is not None and (
            not isinstance(self.max_event_bytes, int)
            or isinstance(self.max_event_bytes, bool)
            or self.max_event_bytes < 1
        ):
            raise ConfigurationError(
                f"stream {self.name!r}: max_event_bytes must be a positive int or None, "
                f"got {self.max_event_bytes!r}"
            )
        if self.maxlen is not None and (
            not isinstance(self.maxlen, int) or isinstance(self.maxlen, bool) or self.maxlen < 1
        ):
            raise ConfigurationError(
                f"stream {self.name!r}: maxlen must be a positive int or None, got {self.maxlen!r}"
            )
        if self.retention is not None:
            value = seconds(self.retention, name=f"stream {self.name!r}: retention")
            if value <= 0:
                raise ConfigurationError(f"stream {self.name!r}: retention must be positive")
            object.__setattr__(self, "retention", value)
        object.__setattr__(
            self,
            "dedup_window",
            seconds(self.dedup_window, name=f"stream {self.name!r}: dedup_window"),
        )

    @property
    def retention_s(self) -> float | None:
        return None if self.retention is None else float(self.retention)  # type: ignore[arg-type]

    @property
    def dedup_window_s(self) -> float:
        return float(self.dedup_window)  # type: ignore[arg-type]


_lock = threading.Lock()
_declared: dict[str, Stream] = {}
_version = [0]  # bumped on every declaration, so lookups can be cached


def declare(stream: Stream) -> None:
    """Record the settings an Event class declared; conflicting declarations fail."""
    with _lock:
        existing = _declared.get(stream.name)
        if existing is not None and existing != stream:
            raise ConfigurationError(
                f"stream {stream.name!r} is declared twice with different settings: "
                f"{existing} and {stream}; declare one Stream object and share it"
            )
        _declared[stream.name] = stream
        _version[0] += 1


class StreamSettings:
    """Settings lookup for one bus: its overrides, else what the events declared."""

    def __init__(self, overrides: Iterable[Stream] | Mapping[str, Stream] | None = None) -> None:
        items = overrides.values() if isinstance(overrides, Mapping) else (overrides or ())
        self._overrides: dict[str, Stream] = {}
        for stream in items:
            if not isinstance(stream, Stream):
                raise ConfigurationError(f"streams= takes Stream objects, got {stream!r}")
            self._overrides[stream.name] = stream
        self._cache: dict[str, Stream] = {}
        self._cache_version = -1

    def get(self, name: str) -> Stream:
        """The settings of stream `name` (looked up once per name: publish calls this)."""
        if self._cache_version != _version[0]:
            self._cache.clear()
            self._cache_version = _version[0]
        found = self._cache.get(name)
        if found is None:
            found = self._overrides.get(name) or _declared.get(name) or Stream(name)
            self._cache[name] = found
        return found
