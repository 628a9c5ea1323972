"""Batched acknowledgements: one XACK per flush, however many entries completed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.wire import Pooled
from eventbus.worker.groups import is_nogroup

log = logging.getLogger("eventbus.worker")


class AckBatcher:
    """Collects completed stream ids and acknowledges them in one XACK per flush.

    A flush starts on the next loop iteration after the first id arrives; ids
    that complete while an XACK is in flight join the next one, so batches grow
    with load and latency stays one round trip when idle. On connection errors
    the ids are kept and retried (they stay pending in Redis meanwhile, and the
    lease keeper keeps extending them).
    """

    def __init__(
        self,
        wire: Pooled,
        stream_key: str,
        group: str,
        on_acked: Callable[[list[str]], None],
    ) -> None:
        self._wire = wire
        self._key = stream_key
        self._group = group
        self._on_acked = on_acked
        self._pending: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, stream_id: str) -> None:
        self._pending.append(stream_id)
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
                    await self._wire.call("XACK", self._key, self._group, *batch)
                except (RedisError, OSError) as exc:
                    if not is_nogroup(exc):
                        # unreachable, BUSY, READONLY after a failover...: keep and retry
                        self._pending[:0] = batch
                        delay = reconnect.next_delay()
                        log.warning(
                            "ack of %d entries on %s/%s failed (%s); retrying in %.1fs",
                            len(batch), self._key, self._group, exc, delay,
                        )  # fmt: skip
                        await asyncio.sleep(delay)
                        continue
                    # the group (and its pending list) is gone: nothing left to ack
                    log.warning("ack on %s/%s dropped: %s", self._key, self._group, exc)
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
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return not self._pending

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
