"""The async side of publishing: drive the batch protocol on the bus's connections, and
the background task that flushes ``publish_nowait``'s buffer."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.publishing.core import Outcome, Prepared, Request, send_batch
from eventbus.publishing.outbox import Outbox, Pending, PublishStats, record, to_retry
from eventbus.wire import IncompleteExchange

log = logging.getLogger("eventbus.publish")

IO = Callable[[bytes, int], Awaitable[list[Any]]]
BATCH = 500


async def drive(protocol: Generator[Request, list[Any], list[Outcome]], io: IO) -> list[Outcome]:
    """Run a sans-IO batch protocol over async I/O."""
    request = next(protocol)
    while True:
        try:
            replies = await io(*request)
        except IncompleteExchange as exc:
            try:
                request = protocol.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            request = protocol.send(replies)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def send(items: Sequence[Prepared], io: IO, stats: PublishStats) -> list[Outcome]:
    outcomes = await drive(send_batch(items), io)
    record(outcomes, stats)
    return outcomes


class AsyncFlusher:
    """Writes what ``publish_nowait`` buffered, in pipelined batches, retrying Redis
    errors with backoff until each event's deadline (then the outbox drops it)."""

    def __init__(self, outbox: Outbox, io: IO, stats: PublishStats) -> None:
        self.outbox = outbox
        self._io = io
        self._stats = stats
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def on_loop_thread(self) -> bool:
        return self._loop_thread is None or threading.get_ident() == self._loop_thread

    def wake(self) -> None:
        """Called by the outbox when events arrive (thread-safe)."""
        if self.on_loop_thread():
            self._mark_busy()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._mark_busy)

    def _mark_busy(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._task = loop.create_task(self._run(), name="eventbus-publish-flusher")

    async def _run(self) -> None:
        backoff = Reconnect(initial=0.05, maximum=1.0)
        while True:
            batch = self.outbox.take(BATCH)
            if not batch:
                if self.outbox.idle:
                    self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                if len(self.outbox) == 0:
                    await self._wake.wait()
                continue
            retry = await self._send(batch)
            self.outbox.settle(len(batch) - len(retry), retry)
            if retry:
                self._stats.retried += 1
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    async def _send(self, batch: list[Pending]) -> list[Pending]:
        """Send one batch; returns what must be tried again."""
        try:
            outcomes = await send([p.prepared for p in batch], self._io, self._stats)
        except (RedisError, OSError) as exc:  # nothing was sent (could not connect)
            log.warning("publish_nowait: Redis unavailable (%s); retrying", exc)
            return batch
        except Exception:  # never let the flusher die: its events would never settle
            log.exception("publish_nowait: unexpected error; retrying")
            return batch
        return to_retry(batch, outcomes)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered is written or dropped; False on timeout."""
        if self.outbox.idle:
            return True
        if self._task is None or self._task.done():
            self._start()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None) -> None:
        """Flush (within `timeout`), then stop the task."""
        await self.flush(timeout)
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
