"""The public surface is curated: what `eventbus` exports, and nothing from redis-py."""

from __future__ import annotations

import eventbus
import eventbus.testing


def test_all_is_the_curated_surface() -> None:
    assert sorted(eventbus.__all__) == sorted(
        [
            "Backoff", "BufferFull", "ConfigurationError", "ConnectionFailed", "Context",
            "DecodeError", "EmbeddedServerError", "Event", "EventBus", "EventBusError",
            "EventTooLarge", "EventTypeError", "PermissionDenied", "PublishError",
            "PublishManyError", "PublishResult", "PublishSettings", "PublishStats", "Router",
            "Stream", "SyncPublisher", "Worker", "WorkerSettings", "__version__", "default_router",
            "subscribe",
        ]
    )  # fmt: skip
    for name in eventbus.__all__:
        assert hasattr(eventbus, name), name


def test_errors_share_one_root() -> None:
    for name in ("BufferFull", "ConfigurationError", "ConnectionFailed", "DecodeError",
                 "EmbeddedServerError", "EventTooLarge", "EventTypeError", "PermissionDenied",
                 "PublishError", "PublishManyError"):  # fmt: skip
        assert issubclass(getattr(eventbus, name), eventbus.EventBusError), name
    assert issubclass(eventbus.ConfigurationError, ValueError)
    assert issubclass(eventbus.PermissionDenied, eventbus.ConfigurationError)


def test_testing_helpers_are_exported() -> None:
    assert set(eventbus.testing.__all__) == {
        "RedisServer", "docker_available", "running_worker", "test_redis_url", "unique_prefix",
        "wait_for",
    }  # fmt: skip


def test_importing_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import sys, threading, eventbus, eventbus.testing, eventbus.cli.main;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert 'uvloop' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
