"""A clock that a test moves by hand, for the components that take a `Clock`:

    clock = FakeClock(datetime(2030, 1, 1, 5, 59, 59, tzinfo=UTC))
    async with Scheduler(bus, router.schedules, clock=clock):
        await clock.sleeping(1)      # the scheduler waits for its next tick
        await clock.advance(60)      # a minute passes: every tick in it is met on time

`advance` moves the time in steps, from one sleeper's deadline to the next, and at each
step lets the woken tasks run until they sleep again (or end): a loop sleeping towards
its next deadline meets every deadline exactly on time, however far the clock moves.
Only the component's own view of time is fake: what Redis measures (key TTLs) still
passes in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError

POLL_S = 0.001  # how often (real time) a wait for the sleepers looks again
SPINS = 5  # turns of the event loop before that


@dataclass(eq=False)
class _Sleeper:
    deadline: datetime
    woken: asyncio.Future[None]
    task: asyncio.Task[object] | None


def _wake(sleeper: _Sleeper) -> None:
    if not sleeper.woken.done():
        sleeper.woken.set_result(None)


class FakeClock:
    """A `Clock` whose time moves only when told (`advance`, `advance_to`).

    `start` (an aware datetime; default the real time now) is the first time it shows.
    `settle_timeout` (real seconds, 10) bounds each wait for the clock's sleepers to go
    back to sleep: a task that sleeps on this clock and then blocks on something else
    for longer makes `advance` raise TimeoutError.
    """

    def __init__(self, start: datetime | None = None, *, settle_timeout: Duration = 10.0) -> None:
        if start is None:
            start = datetime.now(UTC)
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise ConfigurationError(
                f"FakeClock: start must be a timezone-aware datetime, got {start!r}"
            )
        self._now = start.astimezone(UTC)
        self._settle_timeout_s = seconds(settle_timeout, name="FakeClock: settle_timeout")
        self._sleepers: list[_Sleeper] = []
        self._tasks: set[asyncio.Task[object]] = set()  # the tasks that slept on this clock

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep until the clock reaches now + `seconds` (moved by `advance`), or until
        `stop` is set; True when `stop` was set."""
        if stop.is_set():
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return stop.is_set()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        sleeper = _Sleeper(
            self._now + timedelta(seconds=seconds), asyncio.get_running_loop().create_future(), task
        )
        self._sleepers.append(sleeper)
        stopped = asyncio.ensure_future(stop.wait())
        stopped.add_done_callback(lambda _: _wake(sleeper))
        try:
            await sleeper.woken
        finally:
            stopped.cancel()
            self._sleepers.remove(sleeper)
        return stop.is_set()

    async def advance(self, by: Duration) -> None:
        """Move the time forward by `by` (seconds or a timedelta), waking each sleeper at
        its deadline, in order, and letting it run until it sleeps again or ends."""
        await self.advance_to(self._now + timedelta(seconds=seconds(by, name="advance: by")))

    async def advance_to(self, when: datetime) -> None:
        """Move the time forward to `when` (aware), as `advance` does."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ConfigurationError(f"advance_to: when must be an aware datetime, got {when!r}")
        if when < self._now:
            raise ConfigurationError(
                f"advance_to: the clock shows {self._now.isoformat()}; it does not go back "
                f"to {when.isoformat()}"
            )
        await self._settle()
        while due := [s.deadline for s in self._sleepers if s.deadline <= when]:
            self._now = max(self._now, min(due))
            for sleeper in self._sleepers:
                if sleeper.deadline <= self._now:
                    _wake(sleeper)
            await self._settle()
        self._now = when.astimezone(UTC)

    async def sleeping(self, count: int = 1, *, timeout: Duration = 10.0) -> None:
        """Wait (real time, at most `timeout`) until at least `count` tasks sleep on this
        clock: after starting a component, before moving the time it waits for."""
        await self._poll(
            lambda: len(self._asleep()) >= count,
            seconds(timeout, name="sleeping: timeout"),
            f"{count} task(s) sleeping on the clock",
        )

    def _asleep(self) -> set[asyncio.Task[object] | None]:
        return {s.task for s in self._sleepers if not s.woken.done()}

    def _settled(self) -> bool:
        """True when every task that slept on this clock sleeps again, or has ended."""
        self._tasks = {task for task in self._tasks if not task.done()}
        return self._tasks <= self._asleep()

    async def _settle(self) -> None:
        await self._poll(
            self._settled,
            self._settle_timeout_s,
            "the tasks sleeping on the clock to sleep again",
        )

    @staticmethod
    async def _poll(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # a few turns of the loop first: a woken task that only computes sleeps again
        # within them, and a clock moved days ahead wakes such tasks thousands of times
        for _ in range(SPINS):
            await asyncio.sleep(0)
            if condition():
                return
        while not condition():
            if loop.time() > deadline:
                raise TimeoutError(f"FakeClock: timed out after {timeout_s}s waiting for {what}")
            await asyncio.sleep(POLL_S)

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
