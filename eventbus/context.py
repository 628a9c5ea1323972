"""What a handler learns about the delivery it is handling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eventbus.errors import ConfigurationError
from eventbus.idempotency import Transaction

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.envelope import Envelope
    from eventbus.events import Event

_log = logging.getLogger("eventbus.handler")


class Context:
    """Per-delivery context passed as a handler's second argument."""

    __slots__ = (
        "_logger",
        "_tx",
        "_tx_refusal",
        "bus",
        "delivery_count",
        "envelope",
        "group",
        "handler",
        "stream",
    )

    def __init__(
        self,
        *,
        bus: EventBus,
        stream: str,
        group: str,
        handler: str,
        envelope: Envelope,
        delivery_count: int,
        tx_refusal: str | None = "it is not idempotent",
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.group = group
        self.handler = handler
        self.envelope = envelope
        self.delivery_count = delivery_count
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._tx: Transaction | None = None
        self._tx_refusal = tx_refusal

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

    def transaction(self) -> Transaction:
        """Redis writes to apply exactly once: the worker runs them in one MULTI/EXEC with
        the idempotency marker and the acknowledgement, after the handler returns (and
        not at all if it raises). Needs ``idempotent=True`` and the idempotency store to
        be the stream's own Redis. See docs/idempotency.md."""
        if self._tx_refusal is not None:
            raise ConfigurationError(
                f"handler {self.handler!r} cannot use ctx.transaction(): {self._tx_refusal}; "
                "declare it with subscribe(..., idempotent=True) and no idempotency_store"
            )
        if self._tx is None:
            self._tx = Transaction()
        return self._tx

    @property
    def pending_transaction(self) -> Transaction | None:
        """The transaction the handler queued writes on, if any (for the worker)."""
        return self._tx

    def slot_key(self, name: str) -> str:
        """A key in the stream's cluster slot (``<prefix>:{<stream>}:app:<name>``), for
        transactions that must also work on a Redis Cluster."""
        return f"{self.bus.keys.stream(self.stream)}:app:{name}"

    async def publish(self, event: Event, **kwargs: Any) -> str:
        """Publish a follow-up event through the worker's bus."""
        return await self.bus.publish(event, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Context(stream={self.stream!r}, group={self.group!r}, "
            f"stream_id={self.stream_id!r}, delivery_count={self.delivery_count})"
        )
