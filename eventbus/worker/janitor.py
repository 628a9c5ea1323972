"""The retention janitor: one per stream a worker consumes, trimming safely."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from eventbus.bus import EventBus
from eventbus.retention import TrimReport, trim_stream

log = logging.getLogger("eventbus.janitor")


@dataclass
class JanitorStats:
    runs: int = 0
    trimmed: int = 0  # entries removed by safe trimming
    cut_unread: dict[str, int] = field(default_factory=dict)  # per group, by the maxlen cap
    cut_unread_uncounted: set[str] = field(default_factory=set)  # Redis < 7: seen, not counted


class Janitor:
    """Every `interval_s` (jittered): trim the stream to its retention without touching
    what a group still needs, and report entries the maxlen cap cut before a group had
    read them (logged once per increase)."""

    def __init__(self, bus: EventBus, stream: str, interval_s: float) -> None:
        self.bus = bus
        self.stream = stream
        self.interval_s = interval_s
        self.stats = JanitorStats()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"eventbus-janitor-{self.stream}"
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.interval_s * random.uniform(0.9, 1.1)):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.run_once()
            except Exception as exc:  # never let the janitor die; try again next time
                log.warning("janitor of stream %s failed: %s", self.stream, exc)

    async def run_once(self) -> TrimReport:
        settings = self.bus.streams.get(self.stream)
        report = await trim_stream(self.bus.redis, self.bus.keys, settings)
        self.stats.runs += 1
        self.stats.trimmed += report.removed
        if report.removed:
            log.info(
                "stream %s: trimmed %d entries before %s (%s)",
                self.stream, report.removed, report.cut, report.reason,
            )  # fmt: skip
        for need in report.groups:
            if need.cut_unread is None:
                self._report_uncounted(need.group, need.cut_into_unread, settings.maxlen)
                continue
            seen = self.stats.cut_unread.get(need.group, 0)
            if need.cut_unread is not None and need.cut_unread > seen:
                self.stats.cut_unread[need.group] = need.cut_unread
                log.warning(
                    "stream %s: the maxlen cap (%s) removed %d entries group %s had not read "
                    "yet; raise maxlen or add consumers to that group",
                    self.stream, settings.maxlen, need.cut_unread - seen, need.group,
                )  # fmt: skip
        return report

    def _report_uncounted(self, group: str, cut: bool, maxlen: int | None) -> None:
        if cut and group not in self.stats.cut_unread_uncounted:
            self.stats.cut_unread_uncounted.add(group)
            log.warning(
                "stream %s: the maxlen cap (%s) removed entries group %s had not read yet "
                "(this Redis cannot count them); raise maxlen or add consumers to that group",
                self.stream, maxlen, group,
            )  # fmt: skip
        elif not cut:
            self.stats.cut_unread_uncounted.discard(group)
