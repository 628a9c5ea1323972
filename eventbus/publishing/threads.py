"""The thread driver of publishing: runs the sans-IO protocols (`batch`, `drain`) over
blocking I/O on the calling thread, the flusher thread of
``SyncPublisher.publish_nowait``, and a drain on the calling thread (what a publisher
still holds at interpreter exit)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any, Protocol, TypeVar

from eventbus.publishing.blocking import SyncIO
from eventbus.publishing.drain import Drain, Pause
from eventbus.publishing.outbox import Outbox
from eventbus.publishing.stats import PublishStats

T = TypeVar("T")
# An idle flusher thread ends after this long; the next event starts another. A thread
# that never ended would keep its publisher from ever being collected.
IDLE_EXIT_S = 5.0


class Waits(Protocol):
    """How a flush loop waits, for the steps of `Drain` that are not requests."""

    def pause(self, seconds: float) -> None: ...
    def idle(self) -> bool: ...


def drive_sync(protocol: Generator[Any, Any, T], io: SyncIO, waits: Waits | None = None) -> T:
    """Run a sans-IO protocol over blocking I/O (`aio.drive` for threads)."""
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
                reply = io(*step)
            elif waits is None:
                raise TypeError(f"{step!r} needs a driver that can wait")
            elif type(step) is Pause:
                waits.pause(step.seconds)
            else:
                reply = waits.idle()
        except BaseException as exc:  # the protocol's to handle, KeyboardInterrupt included
            error = exc


class _Sleeps:
    """The waits of a drain on the calling thread: plain sleeps (it never idles)."""

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def idle(self) -> bool:
        return False


def drain(outbox: Outbox, io: SyncIO, stats: PublishStats, *, until: float) -> None:
    """Write what `outbox` holds from this thread until it is idle or the monotonic
    clock passes `until`; events past their deadline are dropped on the way, as ever."""
    drive_sync(Drain(outbox, stats, serve=False, until=until).steps(), io, _Sleeps())


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
        drive_sync(Drain(self.outbox, self._stats, serve=True).steps(), self._io, self)

    def pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def idle(self) -> bool:
        """The buffer is empty: False to stop (closing, or no events came for
        IDLE_EXIT_S: the thread then ends, and `wake` starts another; the check and
        the hand-over share the lock)."""
        if self._stop.is_set() or self._idle_exit():
            return False
        self._wake.clear()
        return True

    def _idle_exit(self) -> bool:
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
