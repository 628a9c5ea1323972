"""What a handler learns about the delivery it is handling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.envelope import Envelope
    from eventbus.events import Event

_log = logging.getLogger("eventbus.handler")


class Context:
    """Per-delivery context passed as a handler's second argument."""

    __slots__ = ("_logger", "bus", "delivery_count", "envelope", "group", "handler", "stream")

    def __init__(
        self,
        *,
        bus: EventBus,
        stream: str,
        group: str,
        handler: str,
        envelope: Envelope,
        delivery_count: int,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.group = group
        self.handler = handler
        self.envelope = envelope
        self.delivery_count = delivery_count
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def stream_id(self) -> str:
        """The Redis stream entry id (``<ms>-<seq>``)."""
        return self.envelope.stream_id

    @property
    def event_id(self) -> str | None:
        """The envelope's CloudEvents ``id`` (None for entries written without one)."""
        return self.envelope.id

    @property
    def event_type(self) -> str:
        return self.envelope.type

    @property
    def source(self) -> str | None:
        return self.envelope.source

    @property
    def time(self) -> str | None:
        """Publish time, RFC 3339 UTC, as the publisher wrote it."""
        return self.envelope.time

    @property
    def key(self) -> str | None:
        """The publisher's idempotency / partition key, if it set one."""
        return self.envelope.key

    @property
    def idempotency_key(self) -> str:
        """The publisher's key when set, else the stream id: stable across redeliveries."""
        return self.envelope.key or self.envelope.stream_id

    @property
    def headers(self) -> Mapping[str, str]:
        return self.envelope.headers

    @property
    def attempt(self) -> int:
        """1 on the first delivery; the delivery count kept in Redis."""
        return self.delivery_count

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags every record with the stream, group and ids."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _log,
                {
                    "stream": self.stream,
                    "group": self.group,
                    "stream_id": self.stream_id,
                    "event_id": self.event_id,
                    "delivery_count": self.delivery_count,
                },
            )
        return self._logger

    async def publish(self, event: Event, **kwargs: Any) -> str:
        """Publish a follow-up event through the worker's bus."""
        return await self.bus.publish(event, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Context(stream={self.stream!r}, group={self.group!r}, "
            f"stream_id={self.stream_id!r}, delivery_count={self.delivery_count})"
        )
