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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus.backoff import Reconnect
from eventbus.bus import EventBus
from eventbus.clock import SYSTEM_CLOCK, Clock
from eventbus.durations import Duration, seconds_or_none
from eventbus.errors import EventBusError, PublishError
from eventbus.events import Event
from eventbus.publishing.core import OutcomeUnknown, PublishResult
from eventbus.schedules.cron import next_tick, ticks_between
from eventbus.schedules.spec import MAX_CATCH_UP, ScheduleSpec, emitted
from eventbus.scripts import SCRIPTS
from eventbus.service import Runs, serve
from eventbus.timefmt import iso, parse_iso

log = logging.getLogger("eventbus.scheduler")

ON_TIME_S = 1.0  # a tick met within this (plus the jitter) is on time, not missed
MAX_SLEEP_S = 30.0  # sleeps are cut into steps this long (a suspended host wakes us late)


@dataclass
class ScheduleStats:
    fired: int = 0  # ticks this replica wrote events for
    duplicates: int = 0  # publishes another replica had already made
    skipped: int = 0  # due ticks not fired (misfire policy)
    errors: int = 0  # ticks whose function or publish failed


class Scheduler(Runs):
    """Runs the schedules of an app. ``await scheduler.run()`` until SIGTERM/SIGINT, or
    ``async with Scheduler(bus, router): ...``.

    `clock` (default the system's) is where the scheduler reads the time and sleeps
    towards the next tick; tests pass an `eventbus.testing.clock.FakeClock`."""

    def __init__(
        self, bus: EventBus, schedules: Iterable[ScheduleSpec], *, clock: Clock | None = None
    ) -> None:
        self.bus = bus
        self.clock = SYSTEM_CLOCK if clock is None else clock
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
        if force:
            for task in self._tasks:
                task.cancel()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until `request_stop()` or SIGTERM/SIGINT."""
        await serve([self], stop=self._stop, install_signal_handlers=install_signal_handlers)

    async def stop(self, grace: Duration | None = None) -> None:
        """Stop: a tick being published gets `grace` (seconds or a timedelta; 10 s) to
        finish."""
        self._stop.set()
        wait = seconds_or_none(grace, name="grace")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10 if wait is None else wait)
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(self._tasks)
        self._tasks = []

    # -- one schedule ------------------------------------------------------------------

    async def _run(self, spec: ScheduleSpec) -> None:
        reconnect = Reconnect()
        cursor: datetime | None = None
        warned = False
        while not self._stop.is_set():
            try:
                if cursor is None:
                    await self._register(spec)
                    cursor = await self._last_tick(spec) or self.clock.now()
                if not warned:
                    warned = await self._check_name_clash(spec)
                cursor = await self._turn(spec, cursor)
                reconnect.reset()
            except (RedisError, OSError) as exc:
                delay = reconnect.next_delay()
                log.warning(
                    "schedule %s: Redis unavailable (%s); retrying in %.1fs",
                    spec.name,
                    exc,
                    delay,
                )
                await self._sleep(delay)
            except Exception:
                log.exception("schedule %s: unexpected error; retrying", spec.name)
                await self._sleep(reconnect.next_delay())

    async def _turn(self, spec: ScheduleSpec, cursor: datetime) -> datetime:
        """Handle the ticks due since `cursor`, then sleep towards the next; returns the
        new cursor (the latest tick handled)."""
        now = self.clock.now()
        # ticks older than this can fire under no policy: no need to walk them (a long
        # outage would make that walk block the event loop)
        horizon = now - timedelta(seconds=spec.misfire_grace_s + spec.jitter_s + ON_TIME_S + 1)
        due = ticks_between(spec.cron, spec.tz, max(cursor, horizon), now, limit=MAX_CATCH_UP)
        for tick, fire in self._apply_policy(spec, due, now):
            await self._handle_tick(spec, tick, fire)
            cursor = max(cursor, tick)
        upcoming = next_tick(spec.cron, spec.tz, max(cursor, now))
        wait = (upcoming - self.clock.now()).total_seconds()
        if spec.jitter_s:
            wait += random.uniform(0, spec.jitter_s)
        # in short steps: a host suspended mid-sleep must not wake us far too late
        await self._sleep(min(max(0.0, wait), MAX_SLEEP_S))
        return cursor

    @staticmethod
    def _apply_policy(
        spec: ScheduleSpec, due: list[datetime], now: datetime
    ) -> list[tuple[datetime, bool]]:
        """(tick, fire?) for each due tick. A tick met on time (within a second plus the
        jitter) always fires; the missed ones follow the misfire policy."""
        if not due:
            return []
        on_time_s = ON_TIME_S + spec.jitter_s
        ages = [(now - tick).total_seconds() for tick in due]
        decisions = []
        for tick, age in zip(due, ages, strict=True):
            if age <= on_time_s:
                fire = True
            elif spec.misfire == "all":
                fire = age <= spec.misfire_grace_s
            elif spec.misfire == "once":
                fire = tick == due[-1] and age <= spec.misfire_grace_s
            else:
                fire = False
            decisions.append((tick, fire))
        return decisions

    async def _handle_tick(self, spec: ScheduleSpec, tick: datetime, fire: bool) -> None:
        """Fire (or skip) one tick, to the end: once started, a tick is not re-judged."""
        stats = self.stats[spec.name]
        written = duplicates = 0
        error = ""
        if fire:
            written, duplicates, error = await self._fire(spec, tick)
        else:
            stats.skipped += 1
            log.info(
                "schedule %s: skipped tick %s (misfire=%s)", spec.name, iso(tick), spec.misfire
            )
        upcoming = next_tick(spec.cron, spec.tz, tick)
        await self.bus.wire.script(
            SCRIPTS.sched_record,
            [self.bus.keys.schedule(spec.name)],
            [
                iso(tick),
                iso(self.clock.now()),
                iso(upcoming),
                written,
                duplicates,
                0 if fire else 1,
                spec.spec,
                spec.tz_name,
                error,
            ],
        )
        await self._register(spec)

    async def _register(self, spec: ScheduleSpec) -> None:
        """Note in the schedule index that a scheduler runs `spec` (every collector then
        reports its state, so a schedule whose schedulers all stopped still alerts).
        The score is the real wall time, whatever the clock: the collectors that read
        it, in other processes, compare it with theirs."""
        await self.bus.redis.zadd(self.bus.keys.schedule_index(), {spec.name: time.time()})

    async def _fire(self, spec: ScheduleSpec, tick: datetime) -> tuple[int, int, str]:
        """Call the function once, publish all it returned; (written, duplicates, error)."""
        stats = self.stats[spec.name]
        try:
            result = spec.fn(tick.astimezone(spec.tz))
            if spec.is_async:
                result = await result  # type: ignore[misc]
            events = emitted(result, f"schedule {spec.name!r}")
        except Exception as exc:
            stats.errors += 1
            log.exception("schedule %s: the function failed for tick %s", spec.name, iso(tick))
            return 0, 0, f"{type(exc).__name__}: {exc}"
        written = duplicates = 0
        for index, event in enumerate(events):
            key = f"sched:{spec.name}:{iso(tick)}" + (f":{index}" if index else "")
            outcome = await self._publish(spec, tick, event, key)
            if not isinstance(outcome, PublishResult):  # an error message (PublishResult is a str)
                stats.errors += 1
                return written, duplicates, outcome
            if outcome.duplicate:
                duplicates += 1
            else:
                written += 1
        if written:
            stats.fired += 1
            log.info("schedule %s: tick %s fired %d event(s)", spec.name, iso(tick), written)
        stats.duplicates += duplicates
        return written, duplicates, ""

    async def _publish(
        self, spec: ScheduleSpec, tick: datetime, event: Event, key: str
    ) -> PublishResult | str:
        """Publish one event of a tick, retrying Redis trouble while the tick's key is
        remembered (a retry then cannot duplicate it); an error message when it fails."""
        reconnect = Reconnect()
        # measured by the clock, while Redis times the key's TTL: the two agree on the
        # system clock (the tick is now), and the margin is half the window
        give_up = tick + timedelta(seconds=spec.dedup_window_s / 2)
        while True:
            try:
                return await self.bus.publish(event, key=key, dedup_window=spec.dedup_window_s)
            except PublishError as exc:
                retryable = _transient(exc.__cause__)
                if not retryable or self.clock.now() > give_up or self._stop.is_set():
                    log.error("schedule %s: tick %s not published: %s", spec.name, iso(tick), exc)
                    return f"{type(exc).__name__}: {exc}"
                delay = reconnect.next_delay()
                log.warning(
                    "schedule %s: publishing tick %s failed (%s); retrying in %.1fs",
                    spec.name,
                    iso(tick),
                    exc,
                    delay,
                )
                await self._sleep(delay)
            except EventBusError as exc:  # an invalid event: no retry helps
                log.error("schedule %s: tick %s not published: %s", spec.name, iso(tick), exc)
                return f"{type(exc).__name__}: {exc}"

    async def _check_name_clash(self, spec: ScheduleSpec) -> bool:
        """Schedule names are global within a prefix: warn when the state says another
        schedule (another spec or zone) uses this name."""
        state = await self.bus.redis.hmget(self.bus.keys.schedule(spec.name), "spec", "tz")
        stored_spec, stored_tz = (v.decode() if isinstance(v, bytes) else v for v in state)
        if stored_spec is not None and (stored_spec, stored_tz) != (spec.spec, spec.tz_name):
            log.warning(
                "schedule %s: its state in Redis was written for %r in %s, not %r in %s: "
                "a changed spec, or another service's schedule of the same name (names are "
                "shared by everything under the prefix; the two would suppress each other)",
                spec.name,
                stored_spec,
                stored_tz,
                spec.spec,
                spec.tz_name,
            )
        return True

    async def _last_tick(self, spec: ScheduleSpec) -> datetime | None:
        value = await self.bus.redis.hget(self.bus.keys.schedule(spec.name), "last_tick")
        return parse_iso(value) if value else None

    async def _sleep(self, delay: float) -> None:
        await self.clock.sleep(delay, self._stop)


TRANSIENT_REPLIES = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _transient(cause: BaseException | None) -> bool:
    """Redis trouble that passes (unreachable, restarting, failing over), as opposed to a
    refusal that will not (WRONGTYPE, OOM...)."""
    if isinstance(cause, (RedisConnectionError, RedisTimeoutError, OSError, OutcomeUnknown)):
        return True  # (an unknown outcome is safe to retry: the tick's key dedupes it)
    return isinstance(cause, RedisError) and str(cause).startswith(TRANSIENT_REPLIES)
