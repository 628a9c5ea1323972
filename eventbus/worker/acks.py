"""Batched acknowledgements: one call per flush, however many entries completed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.permissions import explain_noperm, is_noperm
from eventbus.waiting import wait_for_event
from eventbus.worker.describe import describe
from eventbus.worker.groups import is_nogroup
from eventbus.worker.ratelimit import RateLimited

log = logging.getLogger("eventbus.worker")


T = TypeVar("T")


class AckBatcher(Generic[T]):
    """Collects completed entries and acknowledges them in one call per flush (XACK, or
    the idempotency commit script).

    A flush starts on the next loop iteration after the first id arrives; ids
    that complete while an XACK is in flight join the next one, so batches grow
    with load and latency stays one round trip when idle. On connection errors
    the ids are kept and retried (they stay pending in Redis meanwhile, and the
    lease keeper keeps extending them).
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[object]],
        on_acked: Callable[[list[T]], None],
        *,
        where: str,
        user: str | None = None,
    ) -> None:
        self._send = send
        self._user = user  # the Redis user, named in a missing-permission message
        self._where = where
        self._on_acked = on_acked
        self._pending: list[T] = []
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._warn = RateLimited(log)

    def add(self, item: T) -> None:
        self._pending.append(item)
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        reconnect = Reconnect()
        try:
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._send(batch)
                except (RedisError, OSError) as exc:
                    if not is_nogroup(exc):
                        # unreachable, BUSY, READONLY after a failover...: keep and retry
                        self._pending[:0] = batch
                        delay = reconnect.next_delay()
                        reason = (
                            explain_noperm(exc, user=self._user, what="acknowledging")
                            if is_noperm(exc)
                            else describe(exc)
                        )
                        self._warn.warning(
                            "ack",
                            "ack of %d entries on %s failed (%s); retrying in %.1fs",
                            len(batch),
                            self._where,
                            reason,
                            delay,
                        )
                        await asyncio.sleep(delay)
                        continue
                    # the group (and its pending list) is gone: nothing left to ack
                    log.warning("ack on %s dropped: %s", self._where, exc)
                reconnect.reset()
                self._on_acked(batch)
        finally:
            # when cancelled mid-flight, what is left stays in _pending for flush()
            self._task = None
            self._idle.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every added id is acknowledged; False on timeout."""
        if self._pending and self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if not await wait_for_event(self._idle, timeout):
            return False
        return not self._pending

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
