"""What the async bus and the sync publisher share, with no I/O: their state (service,
keys, streams, counters, the buffer) and the whole of each publish call up to the I/O:
validating the arguments, preparing the commands, and, as a sans-IO protocol, reading
the replies into results or errors. Each face drives these protocols its own way."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

from eventbus.connection import redact
from eventbus.durations import Duration, seconds_or_none
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding
from eventbus.errors import PublishError
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX, Keys, check_name
from eventbus.publishing.batch import (
    Exchange,
    first_result,
    nothing_to_send,
    raise_for_batch,
    send_counted,
)
from eventbus.publishing.core import PublishCore, PublishResult, end_spans, prepare_all
from eventbus.publishing.outbox import Outbox
from eventbus.publishing.settings import PublishSettings
from eventbus.publishing.stats import PublishStats
from eventbus.streams import Stream, StreamSettings

StreamsArg = Iterable[Stream] | Mapping[str, Stream] | None
DataDir = str | os.PathLike[str] | None


class BasePublisher:
    """The state and the sans-IO calls of a publisher (`EventBus`, `SyncPublisher`)."""

    # raised by any call once the publisher is closed
    closed_message: ClassVar[str] = "the publisher is closed; build a new one"

    def __init__(
        self,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        streams: StreamsArg = None,
        publishing: PublishSettings | None = None,
        url: str | None = None,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.publish_settings = publishing or PublishSettings()
        self.service = check_name("service", service)
        self.keys = Keys(prefix)
        self.encoding: Encoding = encoding
        self.streams = StreamSettings(streams)
        self.url = url
        self.embedded = embedded
        self.publish_stats = PublishStats()
        self._core = PublishCore(
            keys=self.keys,
            service=service,
            encoding=encoding,
            streams=self.streams,
            max_event_bytes=self.publish_settings.max_event_bytes,
        )
        self._outbox = Outbox(self.publish_settings, self.publish_stats)
        self._closed = False

    @property
    def display_url(self) -> str:
        return redact(self.url) if self.url else "<client>"

    @property
    def buffered(self) -> int:
        """Events ``publish_nowait`` holds, not yet written."""
        return len(self._outbox)

    @property
    def buffered_bytes(self) -> int:
        """Bytes ``publish_nowait`` holds (encoded entries, buffered or being sent)."""
        return self._outbox.bytes

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError(self.closed_message)

    def _publish_exchange(
        self,
        event: Event,
        key: str | None,
        stream: str | None,
        headers: dict[str, str] | None,
        dedup_window: Duration | None,
    ) -> Exchange[PublishResult]:
        """``publish``: validates and prepares `event` now (raising, writing nothing,
        when it cannot be published), and returns the protocol that writes it: its
        result, or PublishError (Redis unreachable, or refused it, or the reply was lost:
        then `OutcomeUnknown` is the cause)."""
        prepared, span = self._core.prepare_traced(
            event,
            key=key,
            stream=stream,
            headers=headers,
            dedup_window=seconds_or_none(dedup_window, name="dedup_window"),
        )
        return send_counted(
            [prepared],
            [span],
            self.publish_stats,
            "publish",
            what=prepared.describe,
            finish=first_result,
        )

    def _publish_many_exchange(
        self,
        events: Sequence[Event],
        keys: Sequence[str | None] | None,
        dedup_window: Duration | None,
    ) -> Exchange[list[PublishResult]]:
        """``publish_many``: prepares every event now, and returns the protocol that
        writes them: the results in order, or PublishManyError."""
        window = seconds_or_none(dedup_window, name="dedup_window")
        prepared, spans = prepare_all(self._core, events, keys, window)
        if not prepared:
            return nothing_to_send([])
        return send_counted(
            prepared,
            spans,
            self.publish_stats,
            "publish_many",
            what=lambda: f"{len(events)} events",
            finish=raise_for_batch,
        )

    def _buffer(
        self,
        event: Event,
        key: str | None,
        stream: str | None,
        headers: dict[str, str] | None,
        block_timeout: Duration | None = None,
    ) -> bool:
        """``publish_nowait``: validate, prepare and buffer `event`; False when it was
        dropped at once (buffer full, overflow "drop")."""
        self._check_open()
        timeout = seconds_or_none(block_timeout, name="block_timeout")
        prepared, span = self._core.prepare_traced(event, key=key, stream=stream, headers=headers)
        try:
            return self._outbox.put(prepared, block_timeout=timeout)
        finally:
            if span is not None:  # its write happens later, in a batch
                span.set_attribute("eventbus.buffered", True)
                end_spans([prepared], [span], None)
