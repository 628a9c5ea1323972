"""Publishing from code without an event loop: Flask, Django, scripts, threads.

    publisher = SyncPublisher.from_url(url, service="web")
    publisher.publish(NoteCreated(note_id="1", author="ann"), key="note-1")
    publisher.publish_nowait(NoteViewed(note_id="1"))      # a background thread writes it
    publisher.close()                                      # flushes first

The same envelope, commands, dedup and buffer as the async bus (`eventbus.publishing`);
only the I/O differs: redis-py's thread-safe synchronous pool, and a flusher thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

import redis

from eventbus.bus import PublishSettings
from eventbus.connection import redact, resolve_url
from eventbus.durations import Duration, seconds
from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding
from eventbus.errors import ConfigurationError, PublishError, describe_error
from eventbus.events import Event
from eventbus.keys import DEFAULT_PREFIX, Keys, check_name
from eventbus.publishing import exiting
from eventbus.publishing.blocking import ThreadFlusher, client_io, drive_sync
from eventbus.publishing.core import (
    Outcome,
    Prepared,
    PublishCore,
    PublishResult,
    end_spans,
    prepare_all,
    raise_for_batch,
    send_batch,
    single_result,
)
from eventbus.publishing.outbox import Outbox, PublishStats, account
from eventbus.streams import Stream, StreamSettings

log = logging.getLogger("eventbus.publish")


class SyncPublisher:
    """A thread-safe publisher for synchronous code. Build it with `from_url`."""

    def __init__(
        self,
        client: redis.Redis,
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
        self._client = client
        self._request = client_io(client)
        self.service = check_name("service", service)
        self.keys = Keys(prefix)
        self.url = url
        self.embedded = embedded
        self.publish_stats = PublishStats()
        self._core = PublishCore(
            keys=self.keys,
            service=service,
            encoding=encoding,
            streams=StreamSettings(streams),
            max_event_bytes=settings.max_event_bytes,
        )
        self._outbox = Outbox(
            size=settings.buffer_size,
            max_bytes=settings.buffer_bytes,
            overflow=settings.overflow,
            deadline_s=seconds(settings.deadline, name="deadline"),
            stats=self.publish_stats,
            on_drop=settings.on_drop,
        )
        self._flusher = ThreadFlusher(self._outbox, self._request, self.publish_stats)
        self._outbox.wake = self._flusher.wake
        self._closed = False
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
        streams: Iterable[Stream] | Mapping[str, Stream] | None = None,
        publishing: PublishSettings | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> SyncPublisher:
        """Like `EventBus.from_url`: a URL, ``$EVENTBUS_REDIS_URL``, or the embedded server."""
        url, embedded = resolve_url(
            url, service=service, prefix=prefix, encoding=encoding, data_dir=data_dir
        )
        try:
            client = redis.Redis.from_url(
                url, protocol=2, socket_timeout=10, socket_connect_timeout=5
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
        return cls(
            client,
            service=service,
            prefix=prefix,
            encoding=encoding,
            streams=streams,
            publishing=publishing,
            url=url,
            embedded=embedded,
        )

    def _send(self, items: Sequence[Prepared], method: str) -> list[Outcome]:
        started = time.perf_counter()
        try:
            outcomes = drive_sync(send_batch(items), self._request)
        except BaseException:
            account(items, self.publish_stats, method, started, None)
            raise
        account(items, self.publish_stats, method, started, outcomes)
        return outcomes

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
        window = None if dedup_window is None else seconds(dedup_window, name="dedup_window")
        prepared, span = self._core.prepare_traced(
            event, key=key, stream=stream, headers=headers, dedup_window=window
        )
        try:
            outcomes = self._send([prepared], "publish")
        except (redis.RedisError, OSError) as exc:
            end_spans([prepared], [span], None, exc)
            raise PublishError(
                f"publishing {prepared.describe()} failed: {describe_error(exc)}"
            ) from exc
        end_spans([prepared], [span], outcomes)
        return single_result(prepared, outcomes[0])

    def publish_many(
        self,
        events: Sequence[Event],
        *,
        keys: Sequence[str | None] | None = None,
        dedup_window: Duration | None = None,
    ) -> list[PublishResult]:
        """Write several events in one round trip; see `EventBus.publish_many`."""
        self._check_open()
        window = None if dedup_window is None else seconds(dedup_window, name="dedup_window")
        prepared, spans = prepare_all(self._core, events, keys, window)
        if not prepared:
            return []
        try:
            outcomes = self._send(prepared, "publish_many")
        except (redis.RedisError, OSError) as exc:
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
        block_timeout: float | None = None,
    ) -> bool:
        """Buffer `event` for the flusher thread and return; see `EventBus.publish_nowait`.
        Under ``overflow="block"`` a full buffer makes the calling thread wait for room
        (at most `block_timeout` seconds, then BufferFull)."""
        self._check_open()
        prepared, span = self._core.prepare_traced(event, key=key, stream=stream, headers=headers)
        try:
            return self._outbox.put(prepared, block_timeout=block_timeout)
        finally:
            if span is not None:
                span.set_attribute("eventbus.buffered", True)
                end_spans([prepared], [span], None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered is written (or dropped); False on timeout."""
        return self._outbox.wait_idle(timeout)

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
            raise PublishError("the publisher is closed; build a new one")

    def close(self) -> None:
        """Flush the buffer (each event waits at most until its deadline), stop the
        flusher thread, close connections and the embedded server if it is ours."""
        if self._closed:
            return
        self._closed = True
        exiting.unregister(self._exit_hook)
        try:
            self._flusher.close()
            self._client.close()
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
