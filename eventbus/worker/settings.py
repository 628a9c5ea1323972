"""Worker settings: validated once, when built; durations are seconds or a timedelta."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class _Checked:
    """What `WorkerSettings` holds: every value checked, every duration in float seconds."""

    grace: float
    block: float
    reclaim_interval: float
    consumer_idle_timeout: float
    hygiene_interval: float
    dlq_maxlen: int
    janitor_interval: float
    metrics: bool

    # in the units the worker uses
    @property
    def grace_s(self) -> float:
        return self.grace

    @property
    def block_ms(self) -> int:
        return max(1, int(self.block * 1000))

    @property
    def reclaim_interval_s(self) -> float:
        return self.reclaim_interval

    @property
    def consumer_idle_timeout_ms(self) -> int:
        return int(self.consumer_idle_timeout * 1000)

    @property
    def janitor_interval_s(self) -> float:
        return self.janitor_interval

    @property
    def hygiene_interval_s(self) -> float:
        return self.hygiene_interval


class WorkerSettings(_Checked):
    """Tuning knobs shared by every group a worker runs. Durations are seconds or a
    `datetime.timedelta`, and read back as float seconds; a wrong value raises
    ConfigurationError when the settings are built, naming the setting.

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

    __slots__ = ()

    def __init__(
        self,
        *,
        grace: Duration = 30.0,
        block: Duration = 1.0,
        reclaim_interval: Duration = 1.0,
        consumer_idle_timeout: Duration = 3600.0,
        hygiene_interval: Duration = 60.0,
        dlq_maxlen: int = 100_000,
        janitor_interval: Duration = 60.0,
        metrics: bool = True,
    ) -> None:
        if isinstance(dlq_maxlen, bool) or not isinstance(dlq_maxlen, int) or dlq_maxlen < 0:
            raise ConfigurationError(
                "WorkerSettings: dlq_maxlen must be a whole number of entries, 0 or more "
                f"(0 keeps every dead letter), got {dlq_maxlen!r}"
            )
        if not isinstance(metrics, bool):
            raise ConfigurationError(
                f"WorkerSettings: metrics must be True or False, got {metrics!r}"
            )
        super().__init__(
            grace=_seconds(grace, "grace"),
            block=_seconds(block, "block"),
            reclaim_interval=_seconds(reclaim_interval, "reclaim_interval"),
            consumer_idle_timeout=_seconds(consumer_idle_timeout, "consumer_idle_timeout"),
            hygiene_interval=_seconds(hygiene_interval, "hygiene_interval"),
            dlq_maxlen=dlq_maxlen,
            janitor_interval=_seconds(janitor_interval, "janitor_interval"),
            metrics=metrics,
        )


def _seconds(value: Duration, setting: str) -> float:
    return seconds(value, name=f"WorkerSettings: {setting}")
