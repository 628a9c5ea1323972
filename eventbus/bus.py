"""The bus: a Redis client, a service name, and publishing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.connection import ENV_URL, make_client, make_sync_client, resolve_url
from eventbus.durations import Duration, seconds, seconds_or_none
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding
from eventbus.errors import ConnectionFailed, describe_error
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX
from eventbus.permissions import is_refusal, refused
from eventbus.publishing import exiting
from eventbus.publishing.aio import AsyncFlusher, drive
from eventbus.publishing.base import BasePublisher, DataDir, StreamsArg
from eventbus.publishing.blocking import client_pool
from eventbus.publishing.core import PublishResult
from eventbus.publishing.settings import PublishSettings
from eventbus.wire import Pooled

__all__ = ["EventBus", "PublishSettings"]


class EventBus(BasePublisher):
    """Publishes events and gives workers their Redis connections.

    Build it with `EventBus.from_url`; close it with ``await bus.aclose()`` or
    ``async with bus`` (both flush what ``publish_nowait`` buffered first). The asyncio
    face of publishing: every decision is in `eventbus.publishing` (sans-IO), this class
    does the awaiting.
    """

    closed_message = "the bus is closed; publish before aclose(), or build a new bus"

    def __init__(
        self,
        redis: Redis,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        streams: StreamsArg = None,
        publishing: PublishSettings | None = None,
        url: str | None = None,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        super().__init__(
            service=service,
            prefix=prefix,
            encoding=encoding,
            streams=streams,
            publishing=publishing,
            url=url,
            embedded=embedded,
        )
        self._redis = redis
        self._publishing = asyncio.Semaphore(self.publish_settings.max_publishing)
        self._wire = Pooled(redis)
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
        streams: StreamsArg = None,
        publishing: PublishSettings | None = None,
        data_dir: DataDir = None,
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

    async def check_connection(self, timeout: Duration = 10.0) -> None:
        """PING until Redis answers; after `timeout` (seconds or a timedelta) raise
        ConnectionFailed (its ``url`` is the bus's, password redacted).

        A server that answers but refuses us (a wrong password or user, a database that
        does not exist, a user without the PING permission) fails at once: waiting
        would not help."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(timeout, name="timeout")
        reconnect = Reconnect(maximum=1.0)
        while True:
            try:
                await self._redis.ping()
                return
            except (RedisError, OSError) as exc:
                if is_refusal(exc):
                    raise refused(exc, url=self.url, display_url=self.display_url) from exc
                delay = reconnect.next_delay()
                if loop.time() + delay > deadline:
                    raise ConnectionFailed(
                        f"cannot reach Redis at {self.display_url} "
                        f"({describe_error(exc)}); check the url given to the bus (or "
                        f"{ENV_URL}) and that the server is up",
                        url=self.display_url,
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
        return await drive(
            self._publish_exchange(event, key, stream, headers, dedup_window), self._request
        )

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
        return await drive(self._publish_many_exchange(events, keys, dedup_window), self._request)

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
        return self._buffer(event, key, stream, headers)

    async def flush(self, timeout: Duration | None = None) -> bool:
        """Wait until everything ``publish_nowait`` buffered is written (or dropped at its
        deadline); False if `timeout` (seconds or a timedelta) passed first."""
        return await self._flusher.flush(seconds_or_none(timeout, name="timeout"))

    # -- lifecycle ---------------------------------------------------------------------

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
        if self.url is None:
            exiting.flush(self._outbox, None, self.publish_stats, what=self._what)
            return
        client = make_sync_client(self.url, socket_timeout=5, connect_timeout=2)
        pool = client_pool(client)
        try:
            exiting.flush(self._outbox, pool.request, self.publish_stats, what=self._what)
        finally:
            pool.close()
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
        except (RedisError, OSError) as exc:
            raise ConnectionFailed(
                f"closing the connections to Redis at {self.display_url} failed: "
                f"{describe_error(exc)}",
                url=self.display_url,
            ) from exc
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
