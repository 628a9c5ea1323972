"""The asyncio driver of publishing: runs the sans-IO protocols (`batch`, `drain`) on
the bus's connections, and the task that flushes ``publish_nowait``'s buffer."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, TypeVar

from eventbus.publishing import exiting
from eventbus.publishing.drain import Drain, Pause
from eventbus.publishing.outbox import Outbox
from eventbus.publishing.stats import PublishStats

T = TypeVar("T")
IO = Callable[[bytes, int], Awaitable[list[Any]]]


class Waits(Protocol):
    """How a flush loop waits, for the steps of `Drain` that are not requests."""

    async def pause(self, seconds: float) -> None: ...
    async def idle(self) -> bool: ...


async def drive(protocol: Generator[Any, Any, T], io: IO, waits: Waits | None = None) -> T:
    """Run a sans-IO protocol: each request over `io`, each wait by `waits`; whatever
    they raise is thrown into the protocol, which decides (`threads.drive_sync`'s twin,
    with ``await``)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = protocol.send(reply) if error is None else protocol.throw(error)
        except StopIteration as stop:
            value: T = stop.value
            return value
        reply = error = None
        try:
            if type(step) is tuple:
                reply = await io(*step)
            elif waits is None:
                raise TypeError(f"{step!r} needs a driver that can wait")
            elif type(step) is Pause:
                await waits.pause(step.seconds)
            else:
                reply = await waits.idle()
        except BaseException as exc:  # the protocol's to handle, cancellation included
            error = exc


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
        self._drain: Drain | None = None  # the running task's
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
        drain = self._drain = Drain(self.outbox, self._stats, serve=True)
        try:
            await drive(drain.steps(), self._io, self)
        except asyncio.CancelledError:
            if self._closing:
                raise
            # Not aclose(): the loop is ending (asyncio.run cancels the tasks left when
            # main returns) with the bus never closed. It still runs this task to its
            # end, so write what is held, each event until its deadline, then stop.
            await self._drain_unclosed(drain)
            raise

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def idle(self) -> bool:
        """The buffer is empty: tell flush() (it re-checks the outbox itself), then wait
        for events; False when closing."""
        self._idle.set()
        if self._closing:
            return False
        self._wake.clear()
        if len(self.outbox) == 0:
            await self._wake.wait()
        return True

    async def _drain_unclosed(self, drain: Drain) -> None:
        await drive(drain.settle_interrupted(), self._io)
        held = self.outbox.held
        if not held:
            return
        dropped_before = self._stats.dropped
        rest = Drain(self.outbox, self._stats, serve=False, max_backoff=0.25)
        await drive(rest.steps(), self._io, self)
        exiting.report_lost(self._what, held, self._stats.dropped - dropped_before, 0)

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
