"""Lease keeping: extend what a consumer holds, and delete idle consumers that own nothing."""

from __future__ import annotations

import asyncio
import logging

from eventbus.scripts import SCRIPTS
from eventbus.waiting import wait_for_event
from eventbus.wire import Pooled
from eventbus.worker.claims import Claims
from eventbus.worker.groups import Member, delete_idle_consumers
from eventbus.worker.settings import WorkerSettings
from eventbus.worker.settle import Settler

log = logging.getLogger("eventbus.worker")

CHUNK = 1000


class LeaseKeeper:
    """Every ``lease/3`` resets the idle clock of the entries its consumer still owns
    (`heartbeat.lua` checks the owner first), and extends their idempotency claims. Runs
    until `stop()`, which the group consumer calls only after in-flight handlers are done
    or released: leases must keep being extended through the shutdown grace period.

    What is owned, it asks the `Settler` (and tells it what another consumer took); it
    takes the settler's lock, so a heartbeat never lands after a release of the same
    entry and undoes its backoff.
    """

    def __init__(
        self,
        wire: Pooled,
        member: Member,
        *,
        lease_s: float,
        settings: WorkerSettings,
        holdings: Settler,
        claims: Claims | None = None,
    ) -> None:
        self._wire = wire
        self._key = member.key
        self._group = member.group
        self._consumer = member.consumer
        self._interval = lease_s / 3
        self._settings = settings
        self._holdings = holdings
        self._claims = claims  # extended on the same beat
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
                if self._claims is not None:
                    await self._claims.extend(self._holdings.held())
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
        async with self._holdings.lock:
            ids = self._holdings.held_ids()
            for start in range(0, len(ids), CHUNK):
                lost = await self._wire.script(
                    SCRIPTS.heartbeat,
                    [self._key],
                    [self._group, self._consumer, *ids[start : start + CHUNK]],
                )
                for raw in lost:
                    self._holdings.lease_lost(raw.decode())
