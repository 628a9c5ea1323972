"""The bus: a Redis client, a service name, and publishing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import redis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.connection import make_client, redact, resolve_url
from eventbus.durations import Duration, seconds
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding
from eventbus.errors import ConnectionFailed, PublishError, describe_error
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX, Keys, check_name
from eventbus.permissions import is_refusal, refused
from eventbus.publishing import exiting
from eventbus.publishing.aio import AsyncFlusher, send
from eventbus.publishing.blocking import SyncIO, client_io
from eventbus.publishing.core import (
    DEFAULT_MAX_EVENT_BYTES,
    Outcome,
    PublishCore,
    PublishResult,
    end_spans,
    prepare_all,
    raise_for_batch,
    single_result,
)
from eventbus.publishing.outbox import (
    DEFAULT_BUFFER_BYTES,
    OnDrop,
    Outbox,
    Overflow,
    PublishStats,
)
from eventbus.streams import Stream, StreamSettings
from eventbus.wire import Pooled

log = logging.getLogger("eventbus.bus")

# Publishes in flight at once per bus; more wait their turn (backpressure) instead of
# opening ever more connections.
DEFAULT_MAX_PUBLISHING = 64


@dataclass(frozen=True)
class PublishSettings:
    """How a bus publishes.

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
    - ``deadline``: how long ``publish_nowait`` retries an event before dropping it (5 s).
    - ``on_drop``: called with (event, reason) for each dropped event.
    """

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_publishing: int = DEFAULT_MAX_PUBLISHING
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    buffer_size: int | None = None
    overflow: Overflow = "drop"
    deadline: Duration = 5.0
    on_drop: OnDrop | None = None


class EventBus:
    """Publishes events and gives workers their Redis connections.

    Build it with `EventBus.from_url`; close it with ``await bus.aclose()`` or
    ``async with bus`` (both flush what ``publish_nowait`` buffered first).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        streams: Iterable[Stream] | Mapping[str, Stream] | None = None,
        publishing: PublishSettings | None = None,
        url: str | None = None,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        settings = publishing or PublishSettings()
        self._redis = redis
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
            max_event_bytes=settings.max_event_bytes,
        )
        self._closed = False
        self._publishing = asyncio.Semaphore(settings.max_publishing)
        self._wire = Pooled(redis)
        self._outbox = Outbox(
            size=settings.buffer_size,
            max_bytes=settings.buffer_bytes,
            overflow=settings.overflow,
            deadline_s=seconds(settings.deadline, name="deadline"),
            stats=self.publish_stats,
            on_drop=settings.on_drop,
        )
        self._flusher = AsyncFlusher(
            self._outbox, self._request, self.publish_stats, what=self._what
        )
        self._outbox.wake = self._flusher.wake
        self._exit_hook = exiting.register(self)

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        streams: Iterable[Stream] | Mapping[str, Stream] | None = None,
        publishing: PublishSettings | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> EventBus:
        """A bus on `url`; with no URL, ``$EVENTBUS_REDIS_URL``, else the embedded
        server for `data_dir` (started now if none runs there). `streams` overrides the
        settings Event classes declared for their streams (see `eventbus.Stream`)."""
        url, embedded = resolve_url(
            url, service=service, prefix=prefix, encoding=encoding, data_dir=data_dir
        )
        return cls(
            make_client(url),
            service=service,
            prefix=prefix,
            encoding=encoding,
            streams=streams,
            publishing=publishing,
            url=url,
            embedded=embedded,
        )

    @property
    def wire(self) -> Pooled:
        """Hand-packed hot-path commands (eventbus.wire), sharing the bus's lifetime."""
        return self._wire

    @property
    def redis(self) -> Redis:
        """The shared redis-py asyncio client (a pool). Handlers may use it."""
        return self._redis

    @property
    def display_url(self) -> str:
        return redact(self.url) if self.url else "<client>"

    async def check_connection(self, timeout: float = 10.0) -> None:
        """PING until Redis answers; after `timeout` seconds raise ConnectionFailed.

        A server that answers but refuses us (a wrong password or user, a database that
        does not exist, a user without the PING permission) fails at once: waiting
        would not help."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reconnect = Reconnect(maximum=1.0)
        while True:
            try:
                await self._redis.ping()
                return
            except (RedisError, OSError) as exc:
                if is_refusal(exc):
                    raise refused(exc, url=self.url, display_url=self.display_url) from None
                delay = reconnect.next_delay()
                if loop.time() + delay > deadline:
                    raise ConnectionFailed(
                        f"cannot reach Redis at {self.display_url} "
                        f"({describe_error(exc)}); "
                        "check --redis-url / EVENTBUS_REDIS_URL and that the server is up"
                    ) from exc
                await asyncio.sleep(delay)

    async def recover(self) -> None:
        """After a connection failure: restart the embedded server if it is ours to run."""
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.ensure)

    # -- publishing -------------------------------------------------------------------

    async def _request(self, payload: bytes, replies: int) -> list[object]:
        async with self._publishing:
            return await self._wire.request(payload, replies)

    async def publish(
        self,
        event: Event,
        *,
        key: str | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
        dedup_window: Duration | None = None,
    ) -> PublishResult:
        """Append `event` to its stream; returns its stream id once Redis has it.

        With a `key`, the event is written once per key within the stream's dedup window
        (10 min by default; `dedup_window` overrides it, 0 turns it off): a repeat writes
        nothing and returns the first publish's id, with ``.duplicate`` set.
        """
        self._check_open()
        self._flusher.on_loop()
        prepared, span = self._core.prepare_traced(
            event, key=key, stream=stream, headers=headers, dedup_window=_window(dedup_window)
        )
        outcomes: list[Outcome] | None = None
        try:
            outcomes = await send([prepared], self._request, self.publish_stats, "publish")
        except (RedisError, OSError) as exc:
            end_spans([prepared], [span], None, exc)
            raise PublishError(
                f"publishing {prepared.describe()} failed: {describe_error(exc)}"
            ) from exc
        end_spans([prepared], [span], outcomes)
        return single_result(prepared, outcomes[0])

    async def publish_many(
        self,
        events: Sequence[Event],
        *,
        keys: Sequence[str | None] | None = None,
        dedup_window: Duration | None = None,
    ) -> list[PublishResult]:
        """Publish several events in one pipelined round trip; results in order.

        If some are not written, PublishManyError says which were written (with their
        ids), which Redis refused, and which lost their reply with the connection.
        """
        self._check_open()
        self._flusher.on_loop()
        prepared, spans = prepare_all(self._core, events, keys, _window(dedup_window))
        if not prepared:
            return []
        try:
            outcomes = await send(prepared, self._request, self.publish_stats, "publish_many")
        except (RedisError, OSError) as exc:  # could not connect: nothing was written
            end_spans(prepared, spans, None, exc)
            raise PublishError(
                f"publishing {len(events)} events failed: {describe_error(exc)}"
            ) from exc
        end_spans(prepared, spans, outcomes)
        return raise_for_batch(prepared, outcomes)

    def publish_nowait(
        self,
        event: Event,
        *,
        key: str | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bool:
        """Buffer `event` and return at once; a background task writes it.

        Never raises for Redis trouble and never blocks the event loop: Redis errors are
        retried until the event's deadline, then the event is dropped, logged, counted in
        ``publish_stats.dropped`` and passed to ``on_drop``. Returns False when the event
        was dropped at once because the buffer is full (overflow "drop"). Invalid events
        (not an Event, too large) still raise here, writing nothing.
        """
        self._check_open()
        prepared, span = self._core.prepare_traced(event, key=key, stream=stream, headers=headers)
        try:
            return self._outbox.put(prepared)
        finally:
            if span is not None:  # its write happens later, in a batch
                span.set_attribute("eventbus.buffered", True)
                end_spans([prepared], [span], None)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything ``publish_nowait`` buffered is written (or dropped at its
        deadline); False if `timeout` passed first."""
        return await self._flusher.flush(timeout)

    @property
    def buffered(self) -> int:
        """Events ``publish_nowait`` holds, not yet written."""
        return len(self._outbox)

    @property
    def buffered_bytes(self) -> int:
        """Bytes ``publish_nowait`` holds (encoded entries, buffered or being sent)."""
        return self._outbox.bytes

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError("the bus is closed; publish before aclose(), or build a new bus")

    @property
    def _what(self) -> str:
        return f"EventBus (service {self.service!r})"

    def flush_at_exit(self) -> None:
        """At interpreter exit, for a bus never closed: its event loop is gone, so what
        ``publish_nowait`` still holds is written over a new blocking connection to the
        bus's URL, within the events' deadline; the rest is reported (see
        `eventbus.publishing.exiting`). A bus built on a client, with no URL, can only
        report."""
        if self._closed or not self._outbox.held:
            return
        client = None
        io: SyncIO | None = None
        if self.url is not None:
            client = redis.Redis.from_url(
                self.url, protocol=2, socket_timeout=5, socket_connect_timeout=2
            )
            io = client_io(client)
        try:
            exiting.flush(self._outbox, io, self.publish_stats, what=self._what)
        finally:
            if client is not None:
                client.close()

    async def aclose(self) -> None:
        """Flush ``publish_nowait``'s buffer (each event waits at most until its
        deadline), close connections, stop the embedded server if this process started
        it."""
        if self._closed:
            return
        self._closed = True
        exiting.unregister(self._exit_hook)
        try:
            await self._flusher.aclose(timeout=None)
            await self._wire.aclose()
            await self._redis.aclose()
        finally:
            if self.embedded is not None:
                await asyncio.to_thread(self.embedded.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _window(value: Duration | None) -> float | None:
    return None if value is None else seconds(value, name="dedup_window")
