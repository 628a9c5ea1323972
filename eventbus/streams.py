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

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.keys import check_name

DEFAULT_DEDUP_WINDOW_S = 600.0


@dataclass(frozen=True, slots=True)
class _StreamValues:
    """What `Stream` holds: every value checked, durations in float seconds."""

    name: str
    maxlen: int | None
    retention: float | None
    dedup_window: float
    max_event_bytes: int | None

    @property
    def retention_s(self) -> float | None:
        return self.retention

    @property
    def dedup_window_s(self) -> float:
        return self.dedup_window


class Stream(_StreamValues):
    """A stream's settings, checked when built (a wrong value raises ConfigurationError
    naming the stream and the setting). Durations are seconds or a `datetime.timedelta`,
    and read back as float seconds.

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

    __slots__ = ()

    def __init__(
        self,
        name: str,
        maxlen: int | None = None,
        retention: Duration | None = None,
        dedup_window: Duration = DEFAULT_DEDUP_WINDOW_S,
        max_event_bytes: int | None = None,
    ) -> None:
        check_name("stream", name)
        what = f"stream {name!r}"
        super().__init__(
            name=name,
            maxlen=_positive_or_none(maxlen, f"{what}: maxlen"),
            retention=_retention(retention, what),
            dedup_window=seconds(dedup_window, name=f"{what}: dedup_window"),
            max_event_bytes=_positive_or_none(max_event_bytes, f"{what}: max_event_bytes"),
        )


def _positive_or_none(value: int | None, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigurationError(f"{what} must be a positive int or None, got {value!r}")
    return value


def _retention(value: Duration | None, what: str) -> float | None:
    if value is None:
        return None
    retention = seconds(value, name=f"{what}: retention")
    if retention <= 0:
        raise ConfigurationError(f"{what}: retention must be positive")
    return retention


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
