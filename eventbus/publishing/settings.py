"""How a publisher publishes: one validated `PublishSettings`, built once and shared by
the async bus and the sync publisher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, get_args

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.events import Event
from eventbus.publishing.core import DEFAULT_MAX_EVENT_BYTES

Overflow = Literal["drop", "block", "raise"]
OnDrop = Callable[[Event, str], object]

OVERFLOWS: Final = get_args(Overflow)
# Publishes in flight at once per bus; more wait their turn (backpressure) instead of
# opening ever more connections.
DEFAULT_MAX_PUBLISHING = 64
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class PublishSettings:
    """How a bus publishes; every field is checked when the settings are built.

    - ``max_event_bytes``: larger encoded payloads are refused (default 1 MiB).
    - ``max_publishing``: publishes in flight at once; more wait their turn (default 64).
    - ``buffer_bytes``: bytes of encoded entries ``publish_nowait`` may hold, buffered or
      being sent (default 32 MiB, like Kafka's ``buffer.memory``). The process holds
      about twice that: each buffered event object is kept too, for ``on_drop``.
    - ``buffer_size``: events ``publish_nowait`` may hold, on top of the byte bound
      (default None: no count bound; a burst of small events that fits in
      ``buffer_bytes`` is never dropped).
    - ``overflow``: when the buffer is full: ``"drop"`` (counted, default), ``"raise"``
      (BufferFull), or ``"block"`` (wait for room; only threads other than the event
      loop's can wait: on the loop thread it raises, as blocking would stall the loop).
    - ``deadline``: how long ``publish_nowait`` retries an event before dropping it
      (seconds or a `datetime.timedelta`; 5 s).
    - ``on_drop``: called with (event, reason) for each dropped event.
    """

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_publishing: int = DEFAULT_MAX_PUBLISHING
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    buffer_size: int | None = None
    overflow: Overflow = "drop"
    deadline: Duration = 5.0
    on_drop: OnDrop | None = None

    def __post_init__(self) -> None:
        _positive_int("max_event_bytes", self.max_event_bytes, "(bytes)")
        _positive_int("max_publishing", self.max_publishing, "(publishes in flight)")
        _positive_int("buffer_bytes", self.buffer_bytes, "(bytes)")
        if self.buffer_size is not None:
            _positive_int("buffer_size", self.buffer_size, "or None (no count bound)")
        if self.overflow not in OVERFLOWS:
            raise ConfigurationError(
                f"PublishSettings.overflow must be 'drop', 'block' or 'raise', "
                f"got {self.overflow!r}"
            )
        if self.deadline_s <= 0:
            raise ConfigurationError(
                f"PublishSettings.deadline must be positive (seconds or a timedelta), "
                f"got {self.deadline!r}"
            )
        if self.on_drop is not None and not callable(self.on_drop):
            raise ConfigurationError(
                "PublishSettings.on_drop must be None or a callable taking "
                f"(event, reason), got {self.on_drop!r}"
            )

    @property
    def deadline_s(self) -> float:
        return seconds(self.deadline, name="PublishSettings.deadline")


def _positive_int(name: str, value: object, accepted: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(
            f"PublishSettings.{name} must be a positive int {accepted}, got {value!r}"
        )
