"""WorkerSettings: validated when built; every duration takes seconds or a timedelta."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from typing import Any

import pytest

from eventbus import ConfigurationError, WorkerSettings

DURATIONS = [
    "grace",
    "block",
    "reclaim_interval",
    "consumer_idle_timeout",
    "hygiene_interval",
    "janitor_interval",
]


def test_defaults_and_units() -> None:
    settings = WorkerSettings()
    assert (settings.grace, settings.grace_s) == (30.0, 30.0)
    assert (settings.block, settings.block_ms) == (1.0, 1000)
    assert settings.reclaim_interval_s == 1.0
    assert settings.consumer_idle_timeout_ms == 3_600_000
    assert settings.hygiene_interval_s == 60.0
    assert settings.janitor_interval_s == 60.0
    assert settings.dlq_maxlen == 100_000
    assert settings.metrics is True


@pytest.mark.parametrize("name", DURATIONS)
def test_every_duration_takes_seconds_or_a_timedelta(name: str) -> None:
    as_float = WorkerSettings(**{name: 2.5})
    as_timedelta = WorkerSettings(**{name: timedelta(milliseconds=2500)})
    assert as_float == as_timedelta
    assert getattr(as_timedelta, name) == 2.5
    assert isinstance(getattr(as_timedelta, name), float)


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "must be seconds (a number) or a datetime.timedelta"),
        (-1, "must not be negative"),
        (float("inf"), "must be a finite number of seconds"),
        (True, "must be seconds (a number) or a datetime.timedelta"),
    ],
)
def test_a_bad_duration_is_refused_naming_it(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"WorkerSettings: {name} {message}")):
        WorkerSettings(**{name: value})


@pytest.mark.parametrize("value", [-1, 1.5, "10", True, None])
def test_a_bad_dlq_maxlen_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="WorkerSettings: dlq_maxlen must be a whole"):
        WorkerSettings(dlq_maxlen=value)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_metrics_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="WorkerSettings: metrics must be True or False"):
        WorkerSettings(metrics=value)


def test_settings_are_frozen_and_replaceable() -> None:
    settings = WorkerSettings(grace=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.grace = 1  # refused: the settings are frozen
    changed = dataclasses.replace(settings, block=timedelta(seconds=2))
    assert (changed.grace, changed.block_ms) == (5.0, 2000)
    assert hash(settings) == hash(WorkerSettings(grace=5.0))
