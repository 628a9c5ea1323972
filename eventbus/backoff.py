"""Retry backoff: exponential with jitter, capped (by the worker) at the lease."""

from __future__ import annotations

import random
from dataclasses import dataclass

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class _BackoffValues:
    """What `Backoff` holds: checked, the delays in float seconds."""

    initial: float
    maximum: float
    multiplier: float
    jitter: float

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * random.random())


class Backoff(_BackoffValues):
    """Delay before retry ``n`` (1-based): ``initial * multiplier**(n-1)``, at most
    ``maximum``, minus up to ``jitter`` of itself at random (so retries of a burst
    of failures spread out instead of arriving together). `initial` and `maximum` are
    seconds or a `datetime.timedelta`, read back as float seconds."""

    __slots__ = ()

    def __init__(
        self,
        initial: Duration = 1.0,
        maximum: Duration = 60.0,
        multiplier: float = 2.0,
        jitter: float = 0.2,
    ) -> None:
        first = seconds(initial, name="Backoff: initial")
        most = seconds(maximum, name="Backoff: maximum")
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise ConfigurationError(f"Backoff: multiplier must be a number, got {multiplier!r}")
        if multiplier < 1:
            raise ConfigurationError("Backoff: multiplier must be at least 1")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise ConfigurationError(f"Backoff: jitter must be a number, got {jitter!r}")
        if not 0 <= jitter <= 1:
            raise ConfigurationError("Backoff: jitter must be between 0 and 1")
        super().__init__(
            initial=first, maximum=most, multiplier=float(multiplier), jitter=float(jitter)
        )

    @classmethod
    def coerce(cls, value: Backoff | Duration) -> Backoff:
        """A Backoff from a Backoff, or from a number/timedelta used as the initial delay."""
        if isinstance(value, Backoff):
            return value
        initial = seconds(value, name="backoff")
        return cls(initial=initial, maximum=max(initial, 60.0))


class Reconnect:
    """Backoff for reconnecting to Redis: 0.1 s doubling to 5 s, with jitter, reset on success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self._policy = Backoff(initial=initial, maximum=maximum, jitter=0.5)
        self._failures = 0

    def next_delay(self) -> float:
        self._failures += 1
        return self._policy.delay(self._failures)

    def reset(self) -> None:
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures
