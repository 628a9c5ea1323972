"""One pipelined round trip of prepared events, sans-IO: the requests to send, the
replies read into one outcome per event, and what the outcomes mean to each caller (a
result, PublishError or PublishManyError, or the events a flusher must send again).

Every protocol here is a generator: it yields ``(payload, reply count)`` requests and is
sent the replies; a driver (`publishing.aio.drive`, `publishing.threads.drive_sync`)
does the I/O and throws whatever the I/O raised into the protocol, which decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from opentelemetry.trace import Span
from redis.exceptions import NoScriptError, RedisError, ResponseError

from eventbus.errors import PublishError, PublishManyError, describe_error
from eventbus.publishing.core import Outcome, OutcomeUnknown, Prepared, PublishResult, end_spans
from eventbus.publishing.outbox import Pending
from eventbus.publishing.stats import PublishStats, account
from eventbus.scripts import SCRIPTS
from eventbus.wire import IncompleteExchange, pack

log = logging.getLogger("eventbus.publish")

T = TypeVar("T")
Request = tuple[bytes, int]
# a protocol: yields requests, is sent their replies, returns T
Exchange = Generator[Request, list[Any], T]
# what an exchange raises when Redis cannot be reached or the connection fails
# (IncompleteExchange, with the replies that did arrive, included)
IO_ERRORS = (RedisError, OSError)


def send_batch(items: Sequence[Prepared]) -> Exchange[list[Outcome]]:
    """The batch protocol: yields (payload, reply count) requests, receives the replies,
    returns one outcome per item: a PublishResult, the error Redis answered (not
    written), or OutcomeUnknown (the connection failed before its reply).

    Dedup-script commands answered NOSCRIPT (a restarted or flushed Redis) did not run:
    the script is loaded and just those are sent again, which is safe. The driver throws
    I/O errors in: IncompleteExchange carries the replies that did arrive; any other
    I/O error means the request was not sent (raised again in the first round, where
    nothing was written; in the second, only the re-sent items are marked not written).
    Anything else thrown in is raised again.
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    pending = list(range(len(items)))
    for round_ in range(2):
        payload = b"".join(items[i].packed for i in pending)
        count = len(pending)
        if round_ == 1:
            payload = pack(["SCRIPT", "LOAD", SCRIPTS.publish_dedup.source]) + payload
        try:
            replies = yield payload, count + round_
        except IncompleteExchange as exc:
            replies = exc.replies
        except IO_ERRORS as exc:
            if round_ == 0:
                raise
            for i in pending:
                outcomes[i] = exc
            break
        # (in the second round, skip the SCRIPT LOAD reply)
        pending = _settle(items, pending, replies[round_:], outcomes, may_retry=round_ == 0)
        if not pending:
            break
    return [o if o is not None else OutcomeUnknown("not sent") for o in outcomes]


def _settle(
    items: Sequence[Prepared],
    pending: list[int],
    replies: list[Any],
    outcomes: list[Outcome | None],
    *,
    may_retry: bool,
) -> list[int]:
    """Record the outcome of each sent item; returns those to send again (NOSCRIPT)."""
    retry = []
    for n, i in enumerate(pending):
        if n >= len(replies):
            outcomes[i] = OutcomeUnknown(f"no reply for {items[i].describe()}")
        elif may_retry and items[i].deduped and isinstance(replies[n], NoScriptError):
            retry.append(i)
        else:
            outcomes[i] = items[i].result(replies[n])
    return retry


def send_counted(
    items: Sequence[Prepared],
    spans: Sequence[Span | None],
    stats: PublishStats,
    method: str,
    *,
    what: Callable[[], str],
    finish: Callable[[Sequence[Prepared], list[Outcome]], T],
) -> Exchange[T]:
    """An awaited call's protocol (`method`: publish, publish_many): `send_batch`,
    counted in `stats`, its spans ended, its outcomes made into what the call returns
    or raises by `finish`. An I/O error before anything was written raises PublishError
    ("publishing `what()` failed: ..."), the I/O error chained as its cause (`what` is
    called only then: the hot path formats no message)."""
    started = time.perf_counter()
    try:
        outcomes = yield from send_batch(items)
    except IO_ERRORS as exc:  # could not connect: nothing was written
        account(items, stats, method, started, None)
        end_spans(items, spans, None, exc)
        raise PublishError(f"publishing {what()} failed: {describe_error(exc)}") from exc
    except BaseException:
        account(items, stats, method, started, None)
        raise
    account(items, stats, method, started, outcomes)
    end_spans(items, spans, outcomes)
    return finish(items, outcomes)


def nothing_to_send(value: T) -> Exchange[T]:
    """A protocol that sends nothing and returns `value` (publish_many of no events)."""
    return value
    yield  # a generator, never reached


def first_result(items: Sequence[Prepared], outcomes: list[Outcome]) -> PublishResult:
    """``publish``'s result: the one event's."""
    return single_result(items[0], outcomes[0])


def single_result(item: Prepared, outcome: Outcome) -> PublishResult:
    if isinstance(outcome, PublishResult):
        return outcome
    if isinstance(outcome, ResponseError):
        raise PublishError(f"Redis refused {item.describe()}: {outcome}") from outcome
    reason = str(outcome) or type(outcome).__name__
    raise PublishError(f"publishing {item.describe()} failed: {reason}") from outcome


def raise_for_batch(items: Sequence[Prepared], outcomes: list[Outcome]) -> list[PublishResult]:
    """The results, or PublishManyError saying which events were written and which not
    (each refusal a PublishError, the reply Redis answered chained as its cause)."""
    results = [o for o in outcomes if isinstance(o, PublishResult)]
    if len(results) == len(outcomes):
        return results
    refused = {
        i: o
        for i, o in enumerate(outcomes)
        if isinstance(o, Exception) and not isinstance(o, OutcomeUnknown)
    }
    unknown = [i for i, o in enumerate(outcomes) if isinstance(o, OutcomeUnknown)]
    first = min([*refused, *unknown])
    problem = refused.get(first) or outcomes[first]
    detail = str(problem) or type(problem).__name__
    raise PublishManyError(
        f"{len(results)} of {len(items)} events written, {len(refused)} refused by Redis, "
        f"{len(unknown)} of unknown outcome (connection lost before their reply); first "
        f"problem at index {first} ({items[first].describe()}): {detail}",
        results=[o if isinstance(o, PublishResult) else None for o in outcomes],
        failed={i: _wrapped(error) for i, error in refused.items()},
        unknown=unknown,
    )


def _wrapped(error: Exception) -> Exception:
    """A refusal as an eventbus error (no redis-py type leaves the publishing API)."""
    if isinstance(error, PublishError):
        return error
    wrapped = PublishError(describe_error(error))
    wrapped.__cause__ = error
    return wrapped


def send_pending(batch: list[Pending], stats: PublishStats) -> Exchange[list[Pending]]:
    """Send one batch of buffered events (``publish_nowait``); returns what must be
    tried again. Never raises for Redis trouble: its events are retried until their
    deadline, so they are not counted as errors yet."""
    items = [p.prepared for p in batch]
    started = time.perf_counter()
    try:
        outcomes = yield from send_batch(items)
    except IO_ERRORS as exc:  # nothing was sent (could not connect)
        log.warning("publish_nowait: Redis unavailable (%s); retrying", describe_error(exc))
        return batch
    except Exception:  # never let a flusher die: its events would never settle
        log.exception("publish_nowait: unexpected error; retrying")
        return batch
    account(items, stats, "publish_nowait", started, outcomes)
    return to_retry(batch, outcomes)


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
