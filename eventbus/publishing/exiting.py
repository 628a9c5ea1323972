"""What ``publish_nowait`` still holds when the interpreter exits and its publisher was
never closed: written within the events' deadline where a connection can still be
made, and what could not be is counted as dropped and reported in one warning."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol

from eventbus.publishing.blocking import SyncIO
from eventbus.publishing.outbox import Outbox
from eventbus.publishing.stats import PublishStats
from eventbus.publishing.threads import drain

log = logging.getLogger("eventbus.publish")

# Past the last event's deadline, how long an exit flush waits for a write in flight.
EXIT_SLACK_S = 1.0


class FlushesAtExit(Protocol):
    def flush_at_exit(self) -> None: ...


def register(publisher: FlushesAtExit) -> Callable[[], None]:
    """An `atexit` hook that flushes `publisher` if it is still alive and open then; it
    holds the publisher weakly, so an unclosed publisher can still be collected, and
    runs only in the process that registered it. Give the hook to `unregister` when the
    publisher closes."""
    ref = weakref.ref(publisher)
    pid = os.getpid()

    def hook() -> None:
        target = ref()
        # a forked child inherits the hook and a copy of the buffer: the parent's to write
        if target is not None and os.getpid() == pid:
            try:
                target.flush_at_exit()
            except Exception:  # at exit, a traceback helps nobody more than a line
                log.exception("flushing an unclosed publisher at exit failed")

    atexit.register(hook)
    return hook


def unregister(hook: Callable[[], None]) -> None:
    atexit.unregister(hook)


def flush(outbox: Outbox, io: SyncIO | None, stats: PublishStats, *, what: str) -> None:
    """Write what `outbox` holds from this thread (`io` None: no way to), at most until
    its last event's deadline plus a little; drop and report the rest."""
    held = outbox.held
    if not held:
        return
    dropped_before = stats.dropped
    if io is not None:
        drain(outbox, io, stats, until=outbox.last_deadline() + EXIT_SLACK_S)
    outbox.drop_all("the interpreter exited before it could be written")
    report_lost(what, held, stats.dropped - dropped_before, outbox.in_flight)


def report_lost(what: str, held: int, lost: int, in_flight: int) -> None:
    """One warning for the events an unclosed publisher lost at the end of its life."""
    if not lost and not in_flight:
        return
    unknown = f", and {in_flight:,} were still being sent (outcome unknown)" if in_flight else ""
    log.warning(
        "%s was not closed: %s publish_nowait events of the %s it held were lost "
        "(not written before their deadline or the exit; counted in publish_stats.dropped)"
        "%s; close it (or use it as a context manager) and check that Redis is reachable",
        what,
        f"{lost:,}",
        f"{held:,}",
        unknown,
    )
