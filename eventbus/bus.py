"""The bus: a Redis client, a service name, and publishing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding, check_headers, content_type, encode_payload, field_list
from eventbus.errors import ConfigurationError, ConnectionFailed, EventTypeError, PublishError
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX, Keys, check_name
from eventbus.wire import Pooled, pack

log = logging.getLogger("eventbus.bus")

ENV_URL = "EVENTBUS_REDIS_URL"
# Publishes in flight at once per bus; more wait their turn (backpressure) instead of
# opening ever more connections.
DEFAULT_MAX_PUBLISHING = 64
# The pool's hard cap. Past it redis-py fails a command ("Too many connections"), so
# it sits far above what the bus itself uses (publishes + a few per group).
POOL_MAX_CONNECTIONS = 1024


def redact(url: str) -> str:
    """A URL with any password replaced by ``***``, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}" if creds else url


class EventBus:
    """Publishes events and gives workers their Redis connections.

    Build it with `EventBus.from_url`; close it with ``await bus.aclose()`` or
    ``async with bus``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        url: str | None = None,
        embedded: EmbeddedRedis | None = None,
        max_publishing: int = DEFAULT_MAX_PUBLISHING,
    ) -> None:
        check_name("service", service)
        self._redis = redis
        self.service = service
        self.keys = Keys(prefix)
        self.encoding: Encoding = encoding
        self._ct = content_type(encoding)
        self.url = url
        self.embedded = embedded
        self._closed = False
        self._publishing = asyncio.Semaphore(max_publishing)
        self._wire = Pooled(redis)

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        service: str,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        data_dir: str | os.PathLike[str] | None = None,
        max_publishing: int = DEFAULT_MAX_PUBLISHING,
    ) -> EventBus:
        """A bus on `url`; with no URL, ``$EVENTBUS_REDIS_URL``, else the embedded
        server for `data_dir` (started now if none runs there).

        `max_publishing` bounds the publishes in flight at once (each holds a pooled
        connection); past it, publishers wait their turn.
        """
        check_name("service", service)
        Keys(prefix)  # validates the prefix before any server starts
        content_type(encoding)
        url = url or os.environ.get(ENV_URL) or None
        embedded = None
        if url is None:
            embedded = EmbeddedRedis(None if data_dir is None else os.fspath(data_dir))
            url = embedded.ensure()
        return cls(
            make_client(url),
            service=service,
            prefix=prefix,
            encoding=encoding,
            url=url,
            embedded=embedded,
            max_publishing=max_publishing,
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
        """PING until Redis answers; after `timeout` seconds raise ConnectionFailed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reconnect = Reconnect(maximum=1.0)
        while True:
            try:
                await self._redis.ping()
                return
            except (RedisError, OSError) as exc:
                delay = reconnect.next_delay()
                if loop.time() + delay > deadline:
                    raise ConnectionFailed(
                        f"cannot reach Redis at {self.display_url} ({exc or type(exc).__name__}); "
                        "check --redis-url / EVENTBUS_REDIS_URL and that the server is up"
                    ) from exc
                await asyncio.sleep(delay)

    async def recover(self) -> None:
        """After a connection failure: restart the embedded server if it is ours to run."""
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.ensure)

    # -- publishing -------------------------------------------------------------------

    def _entry(
        self,
        event: Event,
        key: str | None,
        stream: str | None,
        headers: dict[str, str] | None,
    ) -> tuple[str, list[Any]]:
        """The stream key and XADD arguments for one event; validates it first."""
        if not isinstance(event, Event):
            raise EventTypeError(
                f"cannot publish {type(event).__name__}: only instances of Event subclasses "
                "(class X(Event, stream=...)) can be published"
            )
        cls = type(event)
        stream_name = stream or cls.__eb_stream__
        if stream_name is None:
            raise EventTypeError(
                f"cannot publish {cls.__name__}: it has no stream; declare "
                f"`class {cls.__name__}(Event, stream='name')` or pass stream="
            )
        if stream is not None:
            check_name("stream", stream)
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigurationError(f"key must be a non-empty str, got {key!r}")
        check_headers(headers)
        args: list[Any] = ["XADD", self.keys.stream(stream_name), "*"]
        args += field_list(
            type_name=cls.__eb_type__,
            data=encode_payload(event, self.encoding),
            source=self.service,
            ct=self._ct,
            key=key,
            headers=headers,
        )
        return stream_name, args

    async def publish(
        self,
        event: Event,
        *,
        key: str | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Append `event` to its stream; returns the stream id once Redis has it."""
        self._check_open()
        stream_name, args = self._entry(event, key, stream, headers)
        try:
            async with self._publishing:
                stream_id = await self._wire.call(*args)
        except RedisError as exc:
            raise PublishError(
                f"publishing {type(event).__name__} to stream {stream_name!r} failed: {exc}"
            ) from exc
        return _text(stream_id)

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        """Publish several events in one pipelined round trip; ids in order."""
        self._check_open()
        if not events:
            return []
        entries = [self._entry(event, None, None, None) for event in events]
        payload = b"".join(pack(args) for _, args in entries)
        try:
            async with self._publishing:
                results = await self._wire.request(payload, len(entries))
        except RedisError as exc:
            raise PublishError(f"publishing {len(events)} events failed: {exc}") from exc
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(events)} events were not written "
                f"(first failure at index {failed[0]}: {results[failed[0]]})"
            )
        return [_text(r) for r in results]

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError("the bus is closed; publish before aclose(), or build a new bus")

    async def aclose(self) -> None:
        """Close connections; stop the embedded server if this process started it."""
        if self._closed:
            return
        self._closed = True
        try:
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


def make_client(url: str) -> Redis:
    """The shared client: a pool; one quick internal retry so a connection dropped by a
    server restart is replaced transparently. Longer outages surface as errors."""
    try:
        pool = ConnectionPool.from_url(
            url,
            max_connections=POOL_MAX_CONNECTIONS,
            # RESP2: eventbus.wire reads raw replies and relies on their shapes
            protocol=2,
            socket_timeout=10,
            socket_connect_timeout=5,
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1),
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid Redis URL {redact(url)!r}: {exc}; expected redis://host:port/db, "
            "rediss://..., or unix:///path/to/redis.sock"
        ) from None
    return Redis.from_pool(pool)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
