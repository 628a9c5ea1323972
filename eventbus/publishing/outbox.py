"""The fire-and-forget buffer behind ``publish_nowait``: bounded in bytes (and optionally
in events), deadline per event, thread-safe, shared by the async bus and the sync
publisher."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventbus.errors import BufferFull
from eventbus.publishing.core import Prepared
from eventbus.publishing.settings import Overflow, PublishSettings
from eventbus.publishing.stats import PublishStats, record_drops

log = logging.getLogger("eventbus.publish")


def _tally(items: Sequence[Prepared]) -> str:
    """ "300 Job to 'jobs', 2 Ping to 'pings'": what a batch of events was."""
    counts = Counter((p.type_name, p.stream) for p in items)
    return ", ".join(f"{n} {t} to {s!r}" for (t, s), n in counts.most_common())


def outside_event_loop() -> bool:
    """Blocking is only harmful inside a running event loop (it would stall it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


@dataclass(slots=True)
class Pending:
    prepared: Prepared
    deadline: float  # time.monotonic()
    size: int  # bytes counted against the buffer: the packed command


class Outbox:
    """A bounded FIFO of prepared events waiting for the flusher.

    Bounded like Kafka's ``buffer.memory``: by the bytes of the encoded entries held
    (buffered plus being sent), and by a count only if `size` is given. An event that
    does not fit is admitted anyway when nothing else is held, so one event larger than
    the bound can still go (the bound is exceeded by at most that one event).

    ``wake`` is called (outside the lock) whenever events arrive, so the flusher, an
    asyncio task or a thread, can be woken the way it needs.
    """

    def __init__(
        self,
        settings: PublishSettings,
        stats: PublishStats,
        *,
        wake: Callable[[], None] = lambda: None,
        may_block: Callable[[], bool] | None = None,
    ) -> None:
        self.size = settings.buffer_size
        self.max_bytes = settings.buffer_bytes
        self.overflow: Overflow = settings.overflow
        self.deadline_s = settings.deadline_s
        self.stats = stats
        self.on_drop = settings.on_drop
        self.wake = wake
        self.may_block = may_block or outside_event_loop
        self._items: deque[Pending] = deque()
        self._in_flight = 0
        self._bytes = 0  # held: buffered plus in flight
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def forget_after_fork(self) -> int:
        """In a forked child: drop the copy of the parent's buffer (the parent writes
        it; the child's copy would be written twice, and the events in flight would
        never settle here: no thread came along to settle them). Returns how many."""
        held = len(self._items) + self._in_flight
        self._items = deque()
        self._in_flight = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        return held

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """Bytes of the encoded entries held (buffered plus being sent)."""
        return self._bytes

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def held(self) -> int:
        """Events buffered plus being sent."""
        return self._held()

    def last_deadline(self) -> float:
        """The latest deadline (monotonic) of what is held; events are buffered in
        deadline order, so it is the last one's (or a fresh one's, if all are in flight)."""
        with self._lock:
            if self._items:
                return self._items[-1].deadline
        return time.monotonic() + self.deadline_s

    @property
    def idle(self) -> bool:
        """Nothing buffered and nothing being sent."""
        return not self._items and self._in_flight == 0

    def put(self, prepared: Prepared, *, block_timeout: float | None = None) -> bool:
        """Buffer one event; False when dropped for lack of room (overflow "drop")."""
        size = len(prepared.packed)
        with self._lock:
            if not self._fits(size) and not self._make_room(size, block_timeout):
                if self.overflow == "drop":
                    dropped = prepared
                else:
                    raise BufferFull(self._full_message(size, block_timeout))
            else:
                self._items.append(Pending(prepared, time.monotonic() + self.deadline_s, size))
                self._bytes += size
                dropped = None
        if dropped is not None:
            self.drop([dropped], "buffer full")
            return False
        self.wake()
        return True

    def _full_message(self, size: int, block_timeout: float | None) -> str:
        held = self._held()
        if self.size is not None and held >= self.size:
            head = f"the publish buffer is full ({self.size:,} events, buffer_size)"
            setting = "buffer_size"
        else:
            head = (
                f"the publish buffer is full ({self._bytes:,} bytes held in {held:,} events; "
                f"this event needs {size:,} more of buffer_bytes={self.max_bytes:,})"
            )
            setting = "buffer_bytes"
        if self.overflow == "block" and not self.may_block():
            return (
                f"{head}, and blocking would stall the event loop: await bus.publish() "
                f"for backpressure, or raise {setting}"
            )
        if self.overflow == "block":
            return f"{head} and stayed full for {block_timeout}s; raise {setting}"
        return f"{head}; raise {setting}, or await publish() for backpressure"

    def _fits(self, size: int) -> bool:
        """Under the lock: room for an event of `size` bytes (buffered plus being sent
        count: the flusher's batch is still in memory)."""
        held = self._held()
        if held == 0:
            return True
        if self.size is not None and held >= self.size:
            return False
        return self._bytes + size <= self.max_bytes

    def _make_room(self, size: int, block_timeout: float | None) -> bool:
        """Under the lock: wait for room if the policy and the calling thread allow it."""
        if self.overflow != "block" or not self.may_block():
            return False
        return self._changed.wait_for(lambda: self._fits(size), block_timeout)

    def _held(self) -> int:
        return len(self._items) + self._in_flight

    def take(self, limit: int) -> list[Pending]:
        """Up to `limit` events for the flusher (expired ones are dropped first)."""
        self.expire()
        with self._lock:
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            self._in_flight += len(batch)
            self._changed.notify_all()
        return batch

    def settle(self, batch: list[Pending], retry: list[Pending]) -> None:
        """The flusher is done with `batch` (from `take`): `retry`, a part of it, goes back
        to the front, in order; the rest is written and frees its room."""
        freed = sum(p.size for p in batch) - sum(p.size for p in retry)
        with self._lock:
            self._in_flight -= len(batch)
            self._bytes -= freed
            self._items.extendleft(reversed(retry))
            self._changed.notify_all()

    def expire(self) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            while self._items and self._items[0].deadline <= now:
                pending = self._items.popleft()
                self._bytes -= pending.size
                expired.append(pending.prepared)
            if expired:
                self._changed.notify_all()
        if expired:
            self.drop(expired, "deadline passed while Redis was unavailable")

    def drop(self, items: list[Prepared], reason: str) -> None:
        """Count, log and report events given up on (never under the lock)."""
        record_drops(items, self.stats)
        if len(items) == 1:
            log.error("publish_nowait dropped %s: %s", items[0].describe(), reason)
        elif items:  # one line for a batch: an outage must not flood the log
            log.error(
                "publish_nowait dropped %d events (%s): %s; the first: %s",
                len(items),
                _tally(items),
                reason,
                items[0].describe(),
            )
        for prepared in items:
            if self.on_drop is not None:
                try:
                    self.on_drop(prepared.event, reason)
                except Exception:
                    log.exception("on_drop callback failed")

    def drop_all(self, reason: str) -> None:
        """Give up on everything still buffered (a publisher closing without a flush)."""
        with self._lock:
            left = [p.prepared for p in self._items]
            self._bytes -= sum(p.size for p in self._items)
            self._items.clear()
            self._changed.notify_all()
        if left:
            self.drop(left, reason)

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until nothing is buffered or in flight (for threads)."""
        with self._lock:
            return self._changed.wait_for(lambda: self.idle, timeout)
