"""The scheduler: emits each schedule's events on its ticks, once per tick however many
replicas run.

Every replica computes the same ticks and publishes each tick's events with the
idempotency key ``sched:<name>:<tick, ISO UTC>`` through the idempotent producer: the
first replica writes them, the others get duplicates. No leader election; clock skew
between replicas does not matter, since the key is the tick, not the wall time.

Each schedule's state lives in Redis (``<prefix>:sched:<name>``, shared by the replicas):
the last tick handled, the next tick, when it last fired, counts of fires, duplicates
and skipped ticks. On start, and after any pause (a suspended process, Redis away), the
ticks due since the last handled one follow the misfire policy:

- ``once`` (default): fire the latest due tick, if no older than ``misfire_grace``;
- ``skip``: fire none of them (only ticks met on time fire);
- ``all``: fire every due tick within ``misfire_grace``, oldest first (at most 100).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from redis.exceptions import RedisError

from eventbus.backoff import Reconnect
from eventbus.bus import EventBus
from eventbus.errors import EventBusError
from eventbus.schedules.cron import next_tick, ticks_between
from eventbus.schedules.spec import MAX_CATCH_UP, ScheduleSpec, emitted
from eventbus.scripts import SCRIPTS
from eventbus.service import serve

log = logging.getLogger("eventbus.scheduler")

ON_TIME_S = 1.0  # a tick met within this (plus the jitter) is on time, not missed


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | bytes) -> datetime:
    value = text.decode() if isinstance(text, bytes) else text
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass
class ScheduleStats:
    fired: int = 0  # ticks this replica wrote events for
    duplicates: int = 0  # publishes another replica had already made
    skipped: int = 0  # due ticks not fired (misfire policy)
    errors: int = 0  # ticks whose function or publish failed


class Scheduler:
    """Runs the schedules of an app. ``await scheduler.run()`` until SIGTERM/SIGINT, or
    ``async with Scheduler(bus, router): ...``."""

    def __init__(self, bus: EventBus, schedules: Iterable[ScheduleSpec]) -> None:
        self.bus = bus
        self.schedules = list(schedules)
        self.stats = {s.name: ScheduleStats() for s in self.schedules}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(spec), name=f"eventbus-schedule-{spec.name}")
            for spec in self.schedules
        ]
        log.info("scheduler running %d schedule(s)", len(self.schedules))

    def request_stop(self, *, force: bool = False) -> None:
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until `request_stop()` or SIGTERM/SIGINT."""
        await serve([self], stop=self._stop, install_signal_handlers=install_signal_handlers)

    async def stop(self, grace: float | None = None) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(self._tasks)
        self._tasks = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one schedule ------------------------------------------------------------------

    async def _run(self, spec: ScheduleSpec) -> None:
        reconnect = Reconnect()
        cursor: datetime | None = None
        while not self._stop.is_set():
            try:
                if cursor is None:
                    cursor = await self._last_tick(spec) or datetime.now(UTC)
                cursor = await self._turn(spec, cursor)
                reconnect.reset()
            except (RedisError, OSError, EventBusError) as exc:
                delay = reconnect.next_delay()
                log.warning(
                    "schedule %s: Redis unavailable (%s); retrying in %.1fs",
                    spec.name, exc, delay,
                )  # fmt: skip
                await self._sleep(delay)
            except Exception:
                log.exception("schedule %s: unexpected error; retrying", spec.name)
                await self._sleep(reconnect.next_delay())

    async def _turn(self, spec: ScheduleSpec, cursor: datetime) -> datetime:
        """Handle the ticks due since `cursor`, then sleep until the next; returns the new
        cursor (the latest tick handled)."""
        now = datetime.now(UTC)
        due = ticks_between(spec.cron, spec.tz, cursor, now, limit=MAX_CATCH_UP)
        for tick, fire in self._apply_policy(spec, due, now):
            await self._handle_tick(spec, tick, fire)
            cursor = max(cursor, tick)
        upcoming = next_tick(spec.cron, spec.tz, max(cursor, now))
        wait = (upcoming - datetime.now(UTC)).total_seconds()
        if spec.jitter_s:
            wait += random.uniform(0, spec.jitter_s)
        await self._sleep(max(0.0, wait))
        return cursor

    @staticmethod
    def _apply_policy(
        spec: ScheduleSpec, due: list[datetime], now: datetime
    ) -> list[tuple[datetime, bool]]:
        """(tick, fire?) for each due tick."""
        if not due:
            return []
        age = [(now - tick).total_seconds() for tick in due]
        on_time = age[-1] <= ON_TIME_S + spec.jitter_s
        if spec.misfire == "all":
            return [(t, a <= spec.misfire_grace_s or (t == due[-1] and on_time))
                    for t, a in zip(due, age, strict=True)]  # fmt: skip
        latest_fires = on_time or (spec.misfire == "once" and age[-1] <= spec.misfire_grace_s)
        return [(t, False) for t in due[:-1]] + [(due[-1], latest_fires)]

    async def _handle_tick(self, spec: ScheduleSpec, tick: datetime, fire: bool) -> None:
        stats = self.stats[spec.name]
        written = duplicates = 0
        if fire:
            written, duplicates = await self._fire(spec, tick)
        else:
            stats.skipped += 1
            log.info("schedule %s: skipped tick %s (misfire=%s)", spec.name, iso(tick),
                     spec.misfire)  # fmt: skip
        upcoming = next_tick(spec.cron, spec.tz, tick)
        await self.bus.wire.script(
            SCRIPTS.sched_record,
            [self.bus.keys.schedule(spec.name)],
            [iso(tick), iso(datetime.now(UTC)), iso(upcoming), written, duplicates,
             0 if fire else 1, spec.spec, spec.tz_name],
        )  # fmt: skip

    async def _fire(self, spec: ScheduleSpec, tick: datetime) -> tuple[int, int]:
        stats = self.stats[spec.name]
        local_tick = tick.astimezone(spec.tz)
        try:
            result = spec.fn(local_tick)
            if spec.is_async:
                result = await result  # type: ignore[misc]
            events = emitted(result, f"schedule {spec.name!r}")
        except Exception:
            stats.errors += 1
            log.exception("schedule %s: the function failed for tick %s", spec.name, iso(tick))
            return 0, 0
        written = duplicates = 0
        for index, event in enumerate(events):
            key = f"sched:{spec.name}:{iso(tick)}" + (f":{index}" if index else "")
            result_id = await self.bus.publish(event, key=key, dedup_window=spec.dedup_window_s)
            if result_id.duplicate:
                duplicates += 1
            else:
                written += 1
        if written:
            stats.fired += 1
            log.info("schedule %s: tick %s fired %d event(s)", spec.name, iso(tick), written)
        stats.duplicates += duplicates
        return written, duplicates

    async def _last_tick(self, spec: ScheduleSpec) -> datetime | None:
        value = await self.bus.redis.hget(self.bus.keys.schedule(spec.name), "last_tick")
        return parse_iso(value) if value else None

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass
