"""The async side of publishing: drive the batch protocol on the bus's connections, and
the background task that flushes ``publish_nowait``'s buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.errors import describe_error
from eventbus.publishing import exiting
from eventbus.publishing.core import Outcome, Prepared, PublishResult, Request, send_batch
from eventbus.publishing.outbox import (
    Outbox,
    Pending,
    PublishStats,
    account,
    record,
    to_retry,
)
from eventbus.wire import pack

log = logging.getLogger("eventbus.publish")

IO = Callable[[bytes, int], Awaitable[list[Any]]]
BATCH = 500
# Looking up what an interrupted batch wrote: pages of 100 entries (small: entries come
# whole, payloads and all), 200 pages read back at most,
# and how far before the batch began (clock skew between this host and Redis's).
SCAN_PAGES = 200
SCAN_PAGE = 100
SKEW_MS = 5_000


async def drive(protocol: Generator[Request, list[Any], list[Outcome]], io: IO) -> list[Outcome]:
    """Run a sans-IO batch protocol over async I/O."""
    request = next(protocol)
    while True:
        try:
            replies = await io(*request)
        except (RedisError, OSError) as exc:  # IncompleteExchange included
            try:
                request = protocol.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            request = protocol.send(replies)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def send(
    items: Sequence[Prepared], io: IO, stats: PublishStats, method: str, *, retried: bool = False
) -> list[Outcome]:
    """Write `items` and count them. `retried`: a call that raises is tried again later
    (publish_nowait's batches), so its events are not errors yet."""
    started = time.perf_counter()
    try:
        outcomes = await drive(send_batch(items), io)
    except BaseException:
        if not retried:
            account(items, stats, method, started, None)
        raise
    account(items, stats, method, started, outcomes)
    return outcomes


class AsyncFlusher:
    """Writes what ``publish_nowait`` buffered, in pipelined batches, retrying Redis
    errors with backoff until each event's deadline (then the outbox drops it)."""

    def __init__(
        self, outbox: Outbox, io: IO, stats: PublishStats, *, what: str = "EventBus"
    ) -> None:
        self.outbox = outbox
        self._io = io
        self._stats = stats
        self._what = what  # the publisher, for messages
        self._batch: list[Pending] | None = None  # being sent
        self._batch_started_ms = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self.adopt_running_loop()

    def adopt_running_loop(self) -> None:
        """Remember the event loop running in this thread, if any, as the flusher's."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._loop_thread = threading.get_ident()

    def on_loop(self) -> None:
        """Called by the bus's awaited calls (publish, publish_many): the first adopts
        the running loop and starts writing what was buffered before it."""
        if self._loop is None:
            self.adopt_running_loop()
            if len(self.outbox):
                self._mark_busy()

    def wake(self) -> None:
        """Called by the outbox when events arrive, from any thread. Before the bus has
        seen its event loop, events wait in the buffer (the first flush, publish or
        aclose on the loop starts the flusher). After that loop has closed, they wait
        too, for the flush at interpreter exit (`eventbus.publishing.exiting`): raising
        would break publish_nowait's promise never to fail for lack of a writer."""
        self.adopt_running_loop()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread and loop.is_running():
            self._mark_busy()
            return
        # another thread, or the loop's thread between runs of the loop; RuntimeError:
        # the loop closed meanwhile
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._mark_busy)

    def _mark_busy(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="eventbus-publish-flusher"
            )

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            if self._closing:
                raise
            # Not aclose(): the loop is ending (asyncio.run cancels the tasks left when
            # main returns) with the bus never closed. It still runs this task to its
            # end, so write what is held, each event until its deadline, then stop.
            await self._drain_unclosed()
            raise

    async def _serve(self) -> None:
        backoff = Reconnect(initial=0.05, maximum=1.0)
        while True:
            batch = self.outbox.take(BATCH)
            if not batch:
                self._idle.set()  # flush() re-checks the outbox itself
                if self._closing:
                    return
                self._wake.clear()
                if len(self.outbox) == 0:
                    await self._wake.wait()
                continue
            if await self._write(batch):
                backoff.reset()
            else:
                self._stats.retried += 1
                await asyncio.sleep(backoff.next_delay())

    async def _write(self, batch: list[Pending]) -> bool:
        """Send `batch` and settle it with the outbox; False if some must be retried.
        Cancelled mid-send, the batch stays in `_batch` (its outcome unknown, as with a
        lost reply): `_drain_unclosed` finds out what of it was written."""
        self._batch = batch
        self._batch_started_ms = int(time.time() * 1000)
        retry = await self._send(batch)
        self._batch = None
        self.outbox.settle(batch, retry)
        return not retry

    async def _drain_unclosed(self) -> None:
        if self._batch is not None:
            batch, self._batch = self._batch, None
            written = await self._written(batch, self._batch_started_ms)
            retry = [p for p in batch if p.prepared.event_id not in written]
            done = [p.prepared for p in batch if p.prepared.event_id in written]
            record(done, [PublishResult("") for _ in done], self._stats)
            self.outbox.settle(batch, retry)
        held = self.outbox.held
        if not held:
            return
        dropped_before = self._stats.dropped
        backoff = Reconnect(initial=0.05, maximum=0.25)
        while batch := self.outbox.take(BATCH):  # empty once written or past deadline
            if not await self._write(batch):
                self._stats.retried += 1
                await asyncio.sleep(backoff.next_delay())
        exiting.report_lost(self._what, held, self._stats.dropped - dropped_before, 0)

    async def _written(self, batch: list[Pending], started_ms: int) -> set[str]:
        """The event ids of `batch` that reached their streams: a batch cut off mid-send
        (the loop ending) is looked up instead of sent again, which wrote hundreds of
        events twice. Reads each stream back from its end to a little before the batch
        began (a few pages); what cannot be read is taken as not written (sent again)."""
        wanted: dict[str, set[str]] = {}
        for p in batch:
            wanted.setdefault(p.prepared.stream_key, set()).add(p.prepared.event_id)
        found: set[str] = set()
        for key, ids in wanted.items():
            with contextlib.suppress(RedisError, OSError, ValueError):
                found |= await self._scan_back(key, ids, started_ms - SKEW_MS)
        return found

    async def _scan_back(self, key: str, ids: set[str], since_ms: int) -> set[str]:
        found: set[str] = set()
        end = "+"
        for _ in range(SCAN_PAGES):
            [reply] = await self._io(pack(["XREVRANGE", key, end, "-", "COUNT", SCAN_PAGE]), 1)
            if isinstance(reply, Exception) or not reply:
                break
            for _, fields in reply:
                pairs = dict(zip(fields[::2], fields[1::2], strict=False))
                event_id = pairs.get(b"id", b"").decode(errors="replace")
                if event_id in ids:
                    found.add(event_id)
            last = reply[-1][0].decode()
            if len(found) == len(ids) or int(last.partition("-")[0]) < since_ms:
                break
            ms, _, seq = last.partition("-")
            end = f"{ms}-{int(seq) - 1}" if int(seq) > 0 else f"{int(ms) - 1}"
        return found

    async def _send(self, batch: list[Pending]) -> list[Pending]:
        """Send one batch; returns what must be tried again."""
        try:
            outcomes = await send(
                [p.prepared for p in batch],
                self._io,
                self._stats,
                "publish_nowait",
                retried=True,
            )
        except (RedisError, OSError) as exc:  # nothing was sent (could not connect)
            log.warning("publish_nowait: Redis unavailable (%s); retrying", describe_error(exc))
            return batch
        except Exception:  # never let the flusher die: its events would never settle
            log.exception("publish_nowait: unexpected error; retrying")
            return batch
        return to_retry(batch, outcomes)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered is written or dropped; False on timeout.

        Judged on the outbox's own state (events put from other threads included), not
        on a flag that a cross-thread wake-up might not have updated yet."""
        self.adopt_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not self.outbox.idle:
                    self._idle.clear()
                    self._mark_busy()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None) -> None:
        """Flush (within `timeout`), then stop the task; what is still buffered then is
        dropped, counted and reported, never lost silently."""
        await self.flush(timeout)
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        self.outbox.drop_all("the bus was closed before it could be written")
