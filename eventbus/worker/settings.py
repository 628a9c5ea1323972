"""Worker settings (durations in seconds or timedelta)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta

from eventbus.durations import seconds


@dataclass(frozen=True)
class WorkerSettings:
    """Tuning knobs shared by every group a worker runs.

    - ``grace``: how long shutdown waits for in-flight handlers before releasing them.
    - ``block``: longest XREADGROUP BLOCK (shutdown also unblocks readers at once).
    - ``reclaim_interval``: how often each group runs XAUTOCLAIM (jittered ±20%).
    - ``consumer_idle_timeout``: other consumers idle this long that own nothing are deleted.
    - ``hygiene_interval``: how often that check runs.
    - ``dlq_maxlen``: approximate cap of each dead-letter stream (default 100,000); 0
      keeps everything. What the cap cuts is counted (``stats.dlq_trimmed``) and logged.
    - ``janitor_interval``: how often each stream is trimmed to its retention (and checked
      for entries its maxlen cut before a group read them).
    - ``metrics``: time handlers and event ages for the Prometheus histograms (counters
      are kept either way; turning this off saves about a microsecond per delivery).
    """

    grace: float | timedelta = 30.0
    block: float | timedelta = 1.0
    reclaim_interval: float | timedelta = 1.0
    consumer_idle_timeout: float | timedelta = 3600.0
    hygiene_interval: float | timedelta = 60.0
    dlq_maxlen: int = 100_000
    janitor_interval: float | timedelta = 60.0
    metrics: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("dlq_maxlen", "metrics"):
                object.__setattr__(self, f.name, seconds(value, name=f.name))

    # typed accessors (after __post_init__ every duration is a float)
    @property
    def grace_s(self) -> float:
        return float(self.grace)  # type: ignore[arg-type]

    @property
    def block_ms(self) -> int:
        return max(1, int(float(self.block) * 1000))  # type: ignore[arg-type]

    @property
    def reclaim_interval_s(self) -> float:
        return float(self.reclaim_interval)  # type: ignore[arg-type]

    @property
    def consumer_idle_timeout_ms(self) -> int:
        return int(float(self.consumer_idle_timeout) * 1000)  # type: ignore[arg-type]

    @property
    def janitor_interval_s(self) -> float:
        return float(self.janitor_interval)  # type: ignore[arg-type]

    @property
    def hygiene_interval_s(self) -> float:
        return float(self.hygiene_interval)  # type: ignore[arg-type]
