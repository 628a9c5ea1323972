"""The flush loop of ``publish_nowait``'s buffer, sans-IO: what to send next, how long to
back off after a failure, when to wait for events or stop, and, for a batch cut off
mid-send, the plan that looks up what of it was written instead of sending it twice.

`Drain.steps` yields requests (sent the replies), `Pause` (sleep, then go on) and `IDLE`
(nothing to send: the driver waits for events and sends True to go on, False to stop).
What is dropped, and why, is the outbox's: events past their deadline when taken."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

from eventbus.backoff import Reconnect
from eventbus.publishing.batch import IO_ERRORS, Exchange, Request, send_pending
from eventbus.publishing.core import PublishResult
from eventbus.publishing.outbox import Outbox, Pending
from eventbus.publishing.stats import PublishStats, record
from eventbus.wire import pack

BATCH = 500
# Looking up what an interrupted batch wrote: pages of 100 entries (small: entries come
# whole, payloads and all), 200 pages read back at most,
# and how far before the batch began (clock skew between this host and Redis's).
SCAN_PAGES = 200
SCAN_PAGE = 100
SKEW_MS = 5_000
# an exit drain whose buffer is empty but not idle: the rest is in flight on another
# thread; look again after this long
IN_FLIGHT_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep this long (a failed batch's backoff), then go on."""

    seconds: float


class Idle:
    """Nothing to send: wait for events, then send True to go on (False: stop)."""


IDLE: Final = Idle()
Step = Request | Pause | Idle


class Drain:
    """The decisions of one flush loop over `outbox`.

    - ``serve``: a flusher (asyncio task, thread) that waits for more when the buffer
      is empty (`IDLE`); else the loop ends once what is held is written or dropped.
    - ``until``: a monotonic time the loop stops at (an exit drain), waiting meanwhile
      for what another thread has in flight; at the end, expired events are dropped.
    - ``max_backoff``: the longest pause between failed batches.

    ``sending`` is the batch being sent, and ``sending_since_ms`` when (wall clock):
    a driver cancelled mid-send leaves it there, for `settle_interrupted`.
    """

    def __init__(
        self,
        outbox: Outbox,
        stats: PublishStats,
        *,
        serve: bool,
        until: float | None = None,
        max_backoff: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.stats = stats
        self.serve = serve
        self.until = until
        self.max_backoff = max_backoff
        self.sending: list[Pending] | None = None
        self.sending_since_ms = 0

    def steps(self) -> Generator[Step, Any, None]:
        backoff = Reconnect(initial=0.05, maximum=self.max_backoff)
        while self.until is None or time.monotonic() < self.until:
            batch = self.outbox.take(BATCH)
            if not batch:
                if self.serve:
                    if not (yield IDLE):
                        return
                elif self.until is None or self.outbox.idle:
                    return
                else:
                    yield Pause(IN_FLIGHT_POLL_S)
                continue
            if (yield from self._write(batch)):
                backoff.reset()
            else:
                self.stats.retried += 1
                yield Pause(self._bounded(backoff.next_delay()))
        self.outbox.expire()

    def _write(self, batch: list[Pending]) -> Exchange[bool]:
        """Send `batch` and settle it with the outbox; False if some must be retried."""
        self.sending = batch
        self.sending_since_ms = int(time.time() * 1000)
        retry = yield from send_pending(batch, self.stats)
        self.sending = None
        self.outbox.settle(batch, retry)
        return not retry

    def _bounded(self, delay: float) -> float:
        if self.until is None:
            return delay
        return max(0.0, min(delay, self.until - time.monotonic()))

    def settle_interrupted(self) -> Exchange[None]:
        """Settle a batch whose send was cut off (the event loop ending): what of it
        reached its streams is counted as written, the rest goes back to be sent again
        (sending it all again wrote hundreds of events twice)."""
        batch, self.sending = self.sending, None
        if batch is None:
            return
        written = yield from lookup_written(batch, self.sending_since_ms)
        retry = [p for p in batch if p.prepared.event_id not in written]
        done = [p.prepared for p in batch if p.prepared.event_id in written]
        record(done, [PublishResult("") for _ in done], self.stats)
        self.outbox.settle(batch, retry)


def lookup_written(batch: list[Pending], started_ms: int) -> Exchange[set[str]]:
    """The event ids of `batch` that reached their streams. Reads each stream back from
    its end to a little before the batch began (a few pages); what cannot be read is
    taken as not written (sent again)."""
    wanted: dict[str, set[str]] = {}
    for p in batch:
        wanted.setdefault(p.prepared.stream_key, set()).add(p.prepared.event_id)
    found: set[str] = set()
    for key, ids in wanted.items():
        try:
            found |= yield from _scan_back(key, ids, started_ms - SKEW_MS)
        except (*IO_ERRORS, ValueError):
            continue
    return found


def _scan_back(key: str, ids: set[str], since_ms: int) -> Exchange[set[str]]:
    found: set[str] = set()
    end = "+"
    for _ in range(SCAN_PAGES):
        [reply] = yield pack(["XREVRANGE", key, end, "-", "COUNT", SCAN_PAGE]), 1
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
