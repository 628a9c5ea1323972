"""Lease keeping: extend what a consumer holds, and delete idle consumers that own nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from eventbus.scripts import SCRIPTS
from eventbus.waiting import wait_for_event
from eventbus.wire import Pooled
from eventbus.worker.groups import delete_idle_consumers
from eventbus.worker.settings import WorkerSettings

log = logging.getLogger("eventbus.worker")

CHUNK = 1000


class LeaseKeeper:
    """Every ``lease/3`` resets the idle clock of the entries its consumer still owns
    (`heartbeat.lua` checks the owner first). Runs until `stop()`, which the group
    consumer calls only after in-flight handlers are done or released: leases must
    keep being extended through the shutdown grace period.

    `lock` is shared with releases, so a heartbeat never lands after a release of the
    same entry and undoes its backoff.
    """

    def __init__(
        self,
        wire: Pooled,
        *,
        key: str,
        group: str,
        consumer: str,
        lease_s: float,
        settings: WorkerSettings,
        held: Callable[[], Iterable[str]],
        lost: Callable[[str], None],
        lock: asyncio.Lock,
        also: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._wire = wire
        self._key = key
        self._group = group
        self._consumer = consumer
        self._interval = lease_s / 3
        self._settings = settings
        self._held = held
        self._lost = lost
        self._lock = lock
        self._also = also  # extended on the same beat (idempotency claims)
        self._stop = asyncio.Event()
        self._failures = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_hygiene = loop.time() + self._settings.hygiene_interval_s
        while not self._stop.is_set():
            if await wait_for_event(self._stop, self._interval):
                return
            try:
                await self.extend()
                if self._also is not None:
                    await self._also()
                if loop.time() >= next_hygiene:
                    next_hygiene = loop.time() + self._settings.hygiene_interval_s
                    await delete_idle_consumers(
                        self._wire.client,
                        self._wire,
                        self._key,
                        self._group,
                        me=self._consumer,
                        idle_ms=self._settings.consumer_idle_timeout_ms,
                    )
                self._failures = 0
            except Exception as exc:  # keep extending: a dead keeper means double handling
                self._failures += 1
                level = logging.DEBUG if self._failures < 3 else logging.WARNING
                log.log(
                    level,
                    "%s: extending leases failed %d time(s) in a row: %s",
                    self._group,
                    self._failures,
                    exc,
                )

    async def extend(self) -> None:
        async with self._lock:
            ids = list(self._held())
            for start in range(0, len(ids), CHUNK):
                lost = await self._wire.script(
                    SCRIPTS.heartbeat,
                    [self._key],
                    [self._group, self._consumer, *ids[start : start + CHUNK]],
                )
                for raw in lost:
                    self._lost(raw.decode())
