"""Publishing over blocking I/O: the batch protocol driven on the calling thread, the
flusher thread of ``SyncPublisher.publish_nowait``, and a drain on the calling thread
(what a publisher still holds at interpreter exit)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import redis

from eventbus.backoff import Reconnect
from eventbus.errors import describe_error
from eventbus.publishing.core import Outcome, Request, send_batch
from eventbus.publishing.outbox import Outbox, Pending, PublishStats, account, to_retry
from eventbus.wire import SyncPool

log = logging.getLogger("eventbus.publish")

SyncIO = Callable[[bytes, int], list[Any]]
BATCH = 500
# An idle flusher thread ends after this long; the next event starts another. A thread
# that never ended would keep its publisher from ever being collected.
IDLE_EXIT_S = 5.0


def drive_sync(
    protocol: Generator[Request, list[Any], list[Outcome]],
    io: SyncIO,
) -> list[Outcome]:
    """Run a sans-IO batch protocol over blocking I/O (`aio.drive` for threads)."""
    request = next(protocol)
    while True:
        try:
            replies = io(*request)
        except (redis.RedisError, OSError) as exc:  # IncompleteExchange included
            try:
                request = protocol.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            request = protocol.send(replies)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def client_io(client: redis.Redis) -> SyncIO:
    """Blocking exchanges on a thread-safe pool of our own connections, made with
    `client`'s options (fork-safe: a child drops the connections of its parent)."""
    return SyncPool.for_client(client).request


def _fork_safe(pool: redis.ConnectionPool) -> None:
    """Nothing left to guard: the flusher no longer takes connections from redis-py's
    pool (whose lock a fork could inherit held), and `SyncPool` handles forks itself.
    Kept only until this module's rewrite drops it."""
    del pool


def send_pending(batch: list[Pending], io: SyncIO, stats: PublishStats) -> list[Pending]:
    """Send one batch of buffered events; returns what must be tried again."""
    try:
        items = [p.prepared for p in batch]
        started = time.perf_counter()
        outcomes = drive_sync(send_batch(items), io)
    except (redis.RedisError, OSError) as exc:
        log.warning("publish_nowait: Redis unavailable (%s); retrying", describe_error(exc))
        return batch
    except Exception:  # never let the flusher die: its events would never settle
        log.exception("publish_nowait: unexpected error; retrying")
        return batch
    account(items, stats, "publish_nowait", started, outcomes)
    return to_retry(batch, outcomes)


def drain(outbox: Outbox, io: SyncIO, stats: PublishStats, *, until: float) -> None:
    """Write what `outbox` holds from this thread until it is idle or the monotonic
    clock passes `until`; events past their deadline are dropped on the way, as ever."""
    backoff = Reconnect(initial=0.05, maximum=1.0)
    while time.monotonic() < until:
        batch = outbox.take(BATCH)
        if not batch:
            if outbox.idle:
                return
            time.sleep(0.01)  # the rest is in flight on another thread
            continue
        retry = send_pending(batch, io, stats)
        outbox.settle(batch, retry)
        if retry:
            stats.retried += 1
            time.sleep(max(0.0, min(backoff.next_delay(), until - time.monotonic())))
        else:
            backoff.reset()
    outbox.expire()


class ThreadFlusher:
    """`publishing.aio.AsyncFlusher` for threads: a daemon thread started on demand,
    ending when idle."""

    def __init__(self, outbox: Outbox, io: SyncIO, stats: PublishStats) -> None:
        self.outbox = outbox
        self._io = io
        self._stats = stats
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="eventbus-publish-flusher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        backoff = Reconnect(initial=0.05, maximum=1.0)
        while True:
            batch = self.outbox.take(BATCH)
            if not batch:
                if self._stop.is_set() or self._idle_exit():
                    return
                self._wake.clear()
                continue
            retry = send_pending(batch, self._io, self._stats)
            self.outbox.settle(batch, retry)
            if retry:
                self._stats.retried += 1
                self._stop.wait(backoff.next_delay())
            else:
                backoff.reset()

    def _idle_exit(self) -> bool:
        """Wait for events; True when none came for IDLE_EXIT_S (the thread then ends,
        and `wake` starts another: the check and the hand-over share the lock)."""
        if self._wake.wait(IDLE_EXIT_S):
            return False
        with self._lock:
            if self._wake.is_set() or len(self.outbox):
                return False
            self._thread = None
            return True

    def close(self) -> None:
        """Flush (bounded by the events' deadlines), then stop the thread."""
        self.outbox.wait_idle(None)
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join()
