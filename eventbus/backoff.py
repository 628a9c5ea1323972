"""Retry backoff: exponential with jitter, capped (by the worker) at the lease."""

from __future__ import annotations

import random
from dataclasses import dataclass

from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (1-based): ``initial * multiplier**(n-1)``, at most
    ``maximum``, minus up to ``jitter`` of itself at random (so retries of a burst
    of failures spread out instead of arriving together)."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ConfigurationError("Backoff: initial and maximum must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError("Backoff: multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("Backoff: jitter must be between 0 and 1")

    @classmethod
    def coerce(cls, value: Backoff | Duration) -> Backoff:
        """A Backoff from a Backoff, or from a number/timedelta used as the initial delay."""
        if isinstance(value, Backoff):
            return value
        initial = seconds(value, name="backoff")
        return cls(initial=initial, maximum=max(initial, 60.0))

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * random.random())


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
