"""The retention janitor: one per stream a worker consumes, trimming safely."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from eventbus.bus import EventBus
from eventbus.retention import TrimReport, trim_stream
from eventbus.waiting import wait_for_event

log = logging.getLogger("eventbus.janitor")


@dataclass
class JanitorStats:
    runs: int = 0
    trimmed: int = 0  # entries removed by safe trimming
    # per group: entries the maxlen cap removed before the group read them (Redis ≥ 7)
    cut_unread: dict[str, int] = field(default_factory=dict)


class Janitor:
    """Every `interval_s` (jittered): trim the stream to its retention without touching
    what a group still needs, and report entries the maxlen cap cut before a group had
    read them (logged once per increase)."""

    def __init__(self, bus: EventBus, stream: str, interval_s: float) -> None:
        self.bus = bus
        self.stream = stream
        self.interval_s = interval_s
        self.stats = JanitorStats()
        self._last_snapshot: dict[str, int] = {}
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
            if await wait_for_event(self._stop, self.interval_s * random.uniform(0.9, 1.1)):
                return
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
                self.stream,
                report.removed,
                report.cut,
                report.reason,
            )
        for need in report.groups:
            self._account_cut(need.group, need.cut_unread, settings.maxlen)
        return report

    def _account_cut(self, group: str, snapshot: int | None, maxlen: int | None) -> None:
        """`snapshot` (entries removed minus entries the group read) grows when the cap
        cuts unread entries and shrinks as the group reads past the gap: count each
        growth, once."""
        if snapshot is None:
            return
        previous = self._last_snapshot.get(group, 0)
        self._last_snapshot[group] = snapshot
        if snapshot > previous:
            grew = snapshot - previous
            self.stats.cut_unread[group] = self.stats.cut_unread.get(group, 0) + grew
            log.warning(
                "stream %s: the maxlen cap (%s) removed %d entries group %s had not read "
                "yet; raise maxlen or add consumers to that group",
                self.stream,
                maxlen,
                grew,
                group,
            )
