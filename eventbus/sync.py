"""Publishing from code without an event loop: Flask, Django, scripts, threads.

    publisher = SyncPublisher.from_url(url, service="web")
    publisher.publish(NoteCreated(note_id="1", author="ann"), key="note-1")
    publisher.publish_nowait(NoteViewed(note_id="1"))      # a background thread writes it
    publisher.close()                                      # flushes first

The same envelope, commands, dedup and buffer as the async bus (`eventbus.publishing`);
only the I/O differs: redis-py's thread-safe synchronous pool, and a flusher thread.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import redis

from eventbus.connection import make_sync_client, resolve_url
from eventbus.durations import Duration, seconds_or_none
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding
from eventbus.errors import ConnectionFailed, describe_error
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX
from eventbus.publishing import exiting
from eventbus.publishing.base import BasePublisher, DataDir, StreamsArg
from eventbus.publishing.blocking import client_pool
from eventbus.publishing.core import PublishResult
from eventbus.publishing.settings import PublishSettings
from eventbus.publishing.threads import ThreadFlusher, drive_sync


class SyncPublisher(BasePublisher):
    """A thread-safe publisher for synchronous code. Build it with `from_url`."""

    closed_message = "the publisher is closed; build a new one"

    def __init__(
        self,
        client: redis.Redis,
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
        self._client = client
        self._pool = client_pool(client)
        self._request = self._pool.request
        self._flusher = ThreadFlusher(self._outbox, self._request, self.publish_stats)
        self._outbox.wake = self._flusher.wake
        self._exit_hook = exiting.register(self)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork_in_child(ref))

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
    ) -> SyncPublisher:
        """Like `EventBus.from_url`: a URL, ``$EVENTBUS_REDIS_URL``, or the embedded server."""
        url, embedded = resolve_url(
            url, service=service, prefix=prefix, encoding=encoding, data_dir=data_dir
        )
        return cls(
            make_sync_client(url, socket_timeout=10, connect_timeout=5),
            service=service,
            prefix=prefix,
            encoding=encoding,
            streams=streams,
            publishing=publishing,
            url=url,
            embedded=embedded,
        )

    def publish(
        self,
        event: Event,
        *,
        key: str | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
        dedup_window: Duration | None = None,
    ) -> PublishResult:
        """Write `event` now; see `EventBus.publish`."""
        self._check_open()
        return drive_sync(
            self._publish_exchange(event, key, stream, headers, dedup_window), self._request
        )

    def publish_many(
        self,
        events: Sequence[Event],
        *,
        keys: Sequence[str | None] | None = None,
        dedup_window: Duration | None = None,
    ) -> list[PublishResult]:
        """Write several events in one round trip; see `EventBus.publish_many`."""
        self._check_open()
        return drive_sync(self._publish_many_exchange(events, keys, dedup_window), self._request)

    def publish_nowait(
        self,
        event: Event,
        *,
        key: str | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
        block_timeout: Duration | None = None,
    ) -> bool:
        """Buffer `event` for the flusher thread and return; see `EventBus.publish_nowait`.
        Under ``overflow="block"`` a full buffer makes the calling thread wait for room
        (at most `block_timeout`, seconds or a timedelta, then BufferFull)."""
        return self._buffer(event, key, stream, headers, block_timeout)

    def flush(self, timeout: Duration | None = None) -> bool:
        """Wait until everything buffered is written (or dropped); False if `timeout`
        (seconds or a timedelta) passed first."""
        return self._outbox.wait_idle(seconds_or_none(timeout, name="timeout"))

    def close(self) -> None:
        """Flush the buffer (each event waits at most until its deadline), stop the
        flusher thread, close connections and the embedded server if it is ours."""
        if self._closed:
            return
        self._closed = True
        exiting.unregister(self._exit_hook)
        try:
            self._flusher.close()
            self._pool.close()
            self._client.close()
        except (redis.RedisError, OSError) as exc:
            raise ConnectionFailed(
                f"closing the connections to Redis at {self.display_url} failed: "
                f"{describe_error(exc)}",
                url=self.display_url,
            ) from exc
        finally:
            if self.embedded is not None:
                self.embedded.close()

    def flush_at_exit(self) -> None:
        """At interpreter exit, for a publisher never closed: flush within the events'
        deadline, report what could not be written (see `eventbus.publishing.exiting`)."""
        if not self._closed:
            exiting.flush(
                self._outbox,
                self._request,
                self.publish_stats,
                what=f"SyncPublisher (service {self.service!r})",
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _after_fork_in_child(ref: weakref.ref[SyncPublisher]) -> None:
    """A forked child starts with an empty buffer of its own (the parent writes its
    copy), a flusher of its own, and its own exit flush."""
    publisher = ref()
    if publisher is None or publisher._closed:
        return
    publisher._outbox.forget_after_fork()
    # the parent's flusher thread may have held the stats' lock at the fork
    publisher.publish_stats.lock = threading.Lock()
    publisher._flusher = ThreadFlusher(
        publisher._outbox, publisher._request, publisher.publish_stats
    )
    publisher._outbox.wake = publisher._flusher.wake
    publisher._exit_hook = exiting.register(publisher)
