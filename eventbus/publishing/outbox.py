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
from dataclasses import dataclass, field
from typing import Literal

from eventbus.errors import BufferFull, ConfigurationError
from eventbus.events import Event
from eventbus.histogram import Histogram
from eventbus.publishing.core import Outcome, OutcomeUnknown, Prepared, PublishResult

log = logging.getLogger("eventbus.publish")

Overflow = Literal["drop", "block", "raise"]
OnDrop = Callable[[Event, str], object]


@dataclass
class PublishStats:
    """Counters of one publisher; the Prometheus collector reads them at scrape time."""

    published: int = 0  # written to Redis (publish, publish_many, publish_nowait)
    duplicates: int = 0  # not written: a key already seen in its dedup window
    dropped: int = 0  # publish_nowait events given up: buffer full or deadline passed
    retried: int = 0  # publish_nowait batches sent again after a Redis error
    # (stream, type, outcome: ok | duplicate | error | dropped) -> events
    by_outcome: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dropped_by_stream: Counter[str] = field(default_factory=Counter)
    # publish | publish_many | publish_nowait -> time to Redis's reply, per call or batch
    durations: dict[str, Histogram] = field(default_factory=dict)
    # publishers on several threads (SyncPublisher, its flusher) share one PublishStats;
    # uncontended, the lock costs tens of nanoseconds per call or batch
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, method: str, seconds: float) -> None:
        with self.lock:
            hist = self.durations.get(method)
            if hist is None:
                hist = self.durations[method] = Histogram()
            hist.observe(seconds)


def record(items: Sequence[Prepared], outcomes: list[Outcome], stats: PublishStats) -> None:
    with stats.lock:
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, PublishResult):
                if outcome.duplicate:
                    stats.duplicates += 1
                    stats.by_outcome[item.stream, item.type_name, "duplicate"] += 1
                else:
                    stats.published += 1
                    stats.by_outcome[item.stream, item.type_name, "ok"] += 1
            else:
                stats.by_outcome[item.stream, item.type_name, "error"] += 1


def account(
    items: Sequence[Prepared],
    stats: PublishStats,
    method: str,
    started: float,
    outcomes: list[Outcome] | None,
) -> None:
    """Count one publish call or batch started at `started` (perf_counter): its time to
    Redis's reply, and each event's outcome (None: the call raised, all are errors)."""
    stats.observe(method, time.perf_counter() - started)
    if outcomes is None:
        record_failure(items, stats)
    else:
        record(items, outcomes, stats)


def record_failure(items: Sequence[Prepared], stats: PublishStats) -> None:
    """A publish call that raised (Redis unreachable): every event in it is an error."""
    with stats.lock:
        for item in items:
            stats.by_outcome[item.stream, item.type_name, "error"] += 1


def to_retry(batch: list[Pending], outcomes: list[Outcome]) -> list[Pending]:
    """What a flusher sends again: everything not written. An unknown outcome may have
    been written already (sent again, it may be twice: a key dedupes it); a Redis error
    (OOM, READONLY during a failover) may pass. The deadline bounds both."""
    retry = []
    for pending, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Exception):
            if not isinstance(outcome, OutcomeUnknown):
                log.warning(
                    "publish_nowait: Redis refused %s: %s", pending.prepared.describe(), outcome
                )
            retry.append(pending)
    return retry


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


DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024


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
        *,
        size: int | None = None,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
        overflow: Overflow,
        deadline_s: float,
        stats: PublishStats,
        on_drop: OnDrop | None = None,
        wake: Callable[[], None] = lambda: None,
        may_block: Callable[[], bool] | None = None,
    ) -> None:
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ConfigurationError(
                f"buffer_size must be a positive int or None (no count bound), got {size!r}"
            )
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ConfigurationError(
                f"buffer_bytes must be a positive int (bytes), got {max_bytes!r}"
            )
        if overflow not in ("drop", "block", "raise"):
            raise ConfigurationError(
                f"overflow must be 'drop', 'block' or 'raise', got {overflow!r}"
            )
        if deadline_s <= 0:
            raise ConfigurationError(f"deadline must be positive, got {deadline_s!r}")
        self.size = size
        self.max_bytes = max_bytes
        self.overflow: Overflow = overflow
        self.deadline_s = deadline_s
        self.stats = stats
        self.on_drop = on_drop
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
        with self.stats.lock:
            self.stats.dropped += len(items)
            for prepared in items:
                self.stats.dropped_by_stream[prepared.stream] += 1
                self.stats.by_outcome[prepared.stream, prepared.type_name, "dropped"] += 1
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
