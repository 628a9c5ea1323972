"""Durations in the public API are `timedelta | float` seconds; internally, floats."""

from __future__ import annotations

import math
from datetime import timedelta

from eventbus.errors import ConfigurationError

Duration = timedelta | float | int


def seconds(value: Duration, *, name: str) -> float:
    """Normalise a public duration to float seconds, rejecting negatives and bad types."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ConfigurationError(
            f"{name} must be seconds (a number) or a datetime.timedelta, got {value!r}"
        )
    if not math.isfinite(result):
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    if result < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return result


def seconds_or_none(value: Duration | None, *, name: str) -> float | None:
    """A public optional duration (``timedelta | float | None``) as float seconds."""
    return None if value is None else seconds(value, name=name)
