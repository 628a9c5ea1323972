"""Reading one group's entries over a connection of its own: new ones, reclaimed ones,
and riding out what goes wrong on the way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus.backoff import Reconnect
from eventbus.errors import PermissionDenied
from eventbus.permissions import explain_noperm, is_noperm
from eventbus.scripts import SCRIPTS
from eventbus.waiting import wait_for_event
from eventbus.wire import Dedicated
from eventbus.worker.delivery import Delivery
from eventbus.worker.describe import describe
from eventbus.worker.groups import (
    Member,
    create_group,
    is_nogroup,
    last_delivered,
    recreate_group,
    start_id,
    warn_if_renamed,
)
from eventbus.worker.ratelimit import RateLimited
from eventbus.worker.settings import WorkerSettings
from eventbus.worker.stats import GroupStats

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.handlers import HandlerSpec

log = logging.getLogger("eventbus.worker")

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class Reader:
    """Reads for one group consumer; what it reads, it returns (the consumer takes it on).

    - ``XREADGROUP ... COUNT <free slots> BLOCK``: new entries, never more than the
      consumer has room for;
    - about once a ``reclaim_interval`` (jittered), ``XAUTOCLAIM <lease>``: entries
      released for a retry and those of dead consumers (the delivery count it increments
      is the attempt number);
    - the group is created before the first read, and re-created (from the last id read)
      when it disappears; a lost connection is retried with backoff, and an embedded
      server restarted;
    - at shutdown a blocked read is ended with ``CLIENT UNBLOCK``.
    """

    def __init__(
        self,
        bus: EventBus,
        spec: HandlerSpec,
        member: Member,
        *,
        settings: WorkerSettings,
        stats: GroupStats,
        stop: asyncio.Event,
    ) -> None:
        self._bus = bus
        self._spec = spec
        self._member = member
        self._block_ms = settings.block_ms
        self._reclaim_interval_s = settings.reclaim_interval_s
        self._lease_ms = int(spec.lease_s * 1000)
        self._stats = stats
        self._stop = stop  # ends the waits between retries
        self._client = bus.redis
        self._conn = Dedicated(bus.redis, socket_timeout=settings.block_ms / 1000 + 10)
        self._reading = False
        self._last_seen: str | None = None
        self._cursor = "0-0"
        self._next_reclaim = 0.0
        self._warn = RateLimited(log)
        self._reconnect = Reconnect()
        self.ready = asyncio.Event()  # the group exists (or `fatal` says why it cannot)
        self.fatal: BaseException | None = None

    async def setup(self) -> None:
        """Create the group if need be, before the first read."""
        created = await create_group(
            self._client, self._member.key, self._member.group, start_id(self._spec.start_from)
        )
        if created:
            log.info("created group %s on %s", self._member.group, self._member.key)
        old = self._spec.legacy_group(self._bus.service)
        if old is not None:
            await warn_if_renamed(
                self._client,
                self._member.key,
                self._member.stream,
                handler=self._spec.name,
                old=old,
                new=self._member.group,
                created=created,
            )
        self._last_seen = await last_delivered(self._client, self._member.key, self._member.group)
        self.ready.set()

    # -- reading -----------------------------------------------------------------------

    def reclaim_due(self) -> bool:
        """Whether to reclaim now; if so, the next one is scheduled (before the call, so
        a failing reclaim never starves the reads)."""
        now = asyncio.get_running_loop().time()
        if now < self._next_reclaim:
            return False
        self._next_reclaim = now + self._reclaim_interval_s * random.uniform(0.8, 1.2)
        return True

    async def reclaim(self, count: int) -> list[Delivery]:
        """XAUTOCLAIM up to `count` entries idle past the lease. When it finds any, the
        next reclaim is due at once (more may be waiting)."""
        result = await self._conn.script(
            SCRIPTS.reclaim,
            [self._member.key],
            [self._member.group, self._member.consumer, self._lease_ms, self._cursor, count],
        )
        self._cursor = result[0].decode()
        claimed = [
            Delivery(raw_id.decode(), fields, int(delivered))
            for raw_id, fields, delivered in result[1:]
        ]
        self._stats.reclaimed += len(claimed)
        if claimed:
            self._next_reclaim = asyncio.get_running_loop().time()
        return claimed

    async def read(self, count: int, *, block_ms: int | None = None) -> list[Delivery]:
        """XREADGROUP up to `count` new entries, blocking until the next reclaim is due
        (at most `block`), or `block_ms`."""
        if block_ms is None:
            until_reclaim = self._next_reclaim - asyncio.get_running_loop().time()
            block_ms = max(1, min(self._block_ms, int(until_reclaim * 1000)))
        await self._conn.connect()
        self._reading = True
        try:
            response: Any = await self._conn.call(
                "XREADGROUP",
                "GROUP",
                self._member.group,
                self._member.consumer,
                "COUNT",
                count,
                "BLOCK",
                block_ms,
                "STREAMS",
                self._member.key,
                ">",
            )
        finally:
            self._reading = False
        if not response:
            return []
        # RESP2: [[key, entries]]; RESP3 (a client built with protocol=3): {key: entries}
        entries = response[0][1] if isinstance(response, list) else next(iter(response.values()))
        read = [Delivery(raw_id.decode(), fields, 1) for raw_id, fields in entries]
        self._last_seen = read[-1].stream_id
        return read

    # -- what goes wrong ---------------------------------------------------------------

    def recovered(self) -> None:
        """A turn of the read loop went through: the next failure starts a new backoff."""
        self._reconnect.reset()

    async def recover(self, exc: Exception) -> bool:
        """After a failed turn of the read loop: mend what can be mended and wait, with
        backoff. False when the worker's start must fail instead (`fatal` says why)."""
        if isinstance(exc, CONNECTION_ERRORS):
            self._conn.reset()
            await self._connection_lost(exc)
        elif isinstance(exc, ResponseError) and is_nogroup(exc):
            await self._group_lost()
        elif isinstance(exc, ResponseError):
            return await self._refused(exc)
        else:
            # never let the reader die: a dead reader silently stops the group
            delay = self._reconnect.next_delay()
            log.error(
                "%s: unexpected error in the read loop; retrying", self._member.group, exc_info=exc
            )
            await wait_for_event(self._stop, delay)
        return True

    async def _refused(self, exc: ResponseError) -> bool:
        delay = self._reconnect.next_delay()
        if is_noperm(exc):
            message = explain_noperm(exc, user=self._member.user, what=self._member.group)
            if not self.ready.is_set():  # at start: fail the worker's start
                self.fatal = PermissionDenied(message)
                self.ready.set()
                return False
            self._warn.error("noperm", "%s; retrying in %.1fs", message, delay)
        else:
            self._warn.error(
                "redis",
                "%s: Redis error %s; retrying in %.1fs",
                self._member.group,
                describe(exc),
                delay,
            )
        await wait_for_event(self._stop, delay)
        return True

    async def _connection_lost(self, exc: BaseException) -> None:
        delay = self._reconnect.next_delay()
        level = logging.WARNING if self._reconnect.failures <= 3 else logging.ERROR
        log.log(
            level,
            "%s: cannot reach Redis at %s (%s); retrying in %.1fs",
            self._member.group,
            self._bus.display_url,
            describe(exc),
            delay,
        )
        try:
            await self._bus.recover()
        except Exception as recover_exc:  # the embedded server could not restart
            log.error("%s: %s", self._member.group, recover_exc)
        await wait_for_event(self._stop, delay)

    async def _group_lost(self) -> None:
        delay = self._reconnect.next_delay()
        try:
            await recreate_group(
                self._client, self._member.key, self._member.group, self._last_seen
            )
            self._cursor = "0-0"
        except RedisError as exc:
            log.warning("%s: group re-creation failed (%s)", self._member.group, exc)
        await wait_for_event(self._stop, delay)

    # -- shutdown ----------------------------------------------------------------------

    async def halt(self, loop: asyncio.Task[None]) -> None:
        """End the read loop `loop`: unblock a blocked read (CLIENT UNBLOCK, not
        Task.cancel: a cancel can be lost while redis-py starts a command) and wait for
        the loop to notice the stop; cancel it only if it does not."""
        for _ in range(50):
            if loop.done():
                return
            if self._reading and self._conn.client_id is not None:
                with contextlib.suppress(RedisError):
                    await self._client.client_unblock(self._conn.client_id)
            await asyncio.wait({loop}, timeout=0.2)
        loop.cancel()

    async def aclose(self) -> None:
        await self._conn.aclose()
