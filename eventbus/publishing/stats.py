"""A publisher's counters (`PublishStats`) and how each call or batch is counted in them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventbus.histogram import Histogram
from eventbus.publishing.core import Outcome, Prepared, PublishResult


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


def record_drops(items: Sequence[Prepared], stats: PublishStats) -> None:
    """Events given up on (buffer full, deadline passed, publisher closed or exiting)."""
    with stats.lock:
        stats.dropped += len(items)
        for prepared in items:
            stats.dropped_by_stream[prepared.stream] += 1
            stats.by_outcome[prepared.stream, prepared.type_name, "dropped"] += 1
