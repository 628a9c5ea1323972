"""What the inspection modules share: their errors, the translation of Redis's, paged
reads, and the small conversions of Redis replies."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from eventbus.bus import EventBus
from eventbus.errors import EventBusError
from eventbus.redis_errors import redis_errors
from eventbus.streamid import ms_of
from eventbus.text import as_text

Fields = dict[str, Any]

P = ParamSpec("P")
T = TypeVar("T")


class NotFound(EventBusError):
    """A stream, group, consumer or entry that does not exist."""


class WrongType(EventBusError):
    """A key under the prefix, where a stream belongs, holds something else."""


class Refused(EventBusError):
    """A repair refused, changing nothing: it would lose data, or hit a running worker;
    the message says which argument to change to go ahead anyway (`Param`)."""


def redis_errors_of(bus: EventBus) -> contextlib.AbstractContextManager[None]:
    """`redis_errors` for the bus's connection (its user names the fix of a NOPERM)."""
    return redis_errors(url=bus.url, display_url=bus.display_url)


def guarded(
    fn: Callable[Concatenate[EventBus, P], Awaitable[T]],
) -> Callable[Concatenate[EventBus, P], Coroutine[Any, Any, T]]:
    """A public inspection function that raises eventbus errors only (redis-py's are
    translated, the cause chained)."""

    @functools.wraps(fn)
    async def call(bus: EventBus, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with redis_errors_of(bus):
            return await fn(bus, *args, **kwargs)

    return call


def redis_of(bus: EventBus) -> Any:
    """The bus's client, untyped: redis-py's stubs do not know its decoded replies."""
    return bus.redis


async def pages(
    bus: EventBus,
    key: str,
    low: str = "-",
    high: str = "+",
    *,
    page: int = 10_000,
    limit: int | None = None,
) -> AsyncIterator[list[Any]]:
    """XRANGE `low`..`high` in pages of `page` entries, at most `limit` in all: long
    streams are read without holding them in memory or blocking Redis for long."""
    cursor, seen = low, 0
    while limit is None or seen < limit:
        count = page if limit is None else min(page, limit - seen)
        batch = await redis_of(bus).xrange(key, cursor, high, count=count)
        if batch:
            yield batch
        seen += len(batch)
        if len(batch) < count:
            return
        cursor = "(" + as_text(batch[-1][0])


async def last_generated(bus: EventBus, stream: str) -> str:
    """The last id the stream generated (its entry may be deleted since)."""
    info = await redis_of(bus).xinfo_stream(bus.keys.stream(stream))
    return as_text(info["last-generated-id"])


def age_of(entry_id: str | None, now: float) -> float | None:
    """Seconds since the time of `entry_id` (None for None)."""
    return None if not entry_id else max(0.0, now - ms_of(entry_id) / 1000)


def lag_of(group: dict[str, Any], last_id: str | None) -> int | None:
    """XINFO GROUPS' lag; where Redis gives none (6.2, or after a deletion), 0 when the
    group has read up to the last entry, else None (unknown)."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    if last_id is None or as_text(group["last-delivered-id"]) == last_id:
        return 0
    return None


def int_or_none(value: Any) -> int | None:
    """An integer from a Redis reply, or None when it holds none (nil, or junk)."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
