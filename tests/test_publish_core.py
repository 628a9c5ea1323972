"""The sans-IO core of publishing on its own (settings, the flush loop's decisions, the
lookup of an interrupted batch), fed replies by hand; and what both faces promise about
errors and durations."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from redis.exceptions import RedisError, ResponseError

from eventbus import (
    ConfigurationError,
    EventBus,
    PublishError,
    PublishManyError,
    PublishSettings,
    SyncPublisher,
)
from eventbus.errors import ConnectionFailed
from eventbus.keys import Keys
from eventbus.publishing.core import PublishCore
from eventbus.publishing.drain import IDLE, Drain, Pause
from eventbus.publishing.outbox import Outbox
from eventbus.publishing.stats import PublishStats
from tests.apps.events import Job, Ping


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("max_event_bytes", 0, "positive int"),
        ("max_publishing", True, "positive int"),
        ("buffer_bytes", 1.5, "positive int"),
        ("buffer_size", 0, "or None"),
        ("overflow", "wait", "'drop', 'block' or 'raise'"),
        ("deadline", 0, "must be positive"),
        ("deadline", -1, "must not be negative"),
        ("deadline", "5s", "datetime.timedelta"),
        ("on_drop", "log", "callable"),
    ],
)
def test_publish_settings_are_checked_when_built(field: str, value: object, accepted: str) -> None:
    with pytest.raises(ConfigurationError, match=f"PublishSettings.{field} ") as info:
        PublishSettings(**{field: value})  # type: ignore[arg-type]
    assert accepted in str(info.value)


def test_publish_settings_take_a_timedelta_deadline() -> None:
    assert PublishSettings(deadline=timedelta(milliseconds=1500)).deadline_s == 1.5
    assert PublishSettings(deadline=2).deadline_s == 2.0


def buffered(*events: Job, deadline: float = 30) -> tuple[Outbox, PublishStats, PublishCore]:
    stats = PublishStats()
    outbox = Outbox(PublishSettings(deadline=deadline), stats)
    core = PublishCore(keys=Keys("p"), service="s")
    for event in events:
        outbox.put(core.prepare(event))
    return outbox, stats, core


def test_a_serving_drain_retries_what_redis_refused_then_idles() -> None:
    outbox, stats, _ = buffered(Job(n=0), Job(n=1), Job(n=2))
    steps = Drain(outbox, stats, serve=True).steps()
    payload, count = next(steps)
    assert count == 3 and payload.count(b"XADD") == 3
    pause = steps.send([b"1-0", b"1-1", ResponseError("OOM command not allowed")])
    assert isinstance(pause, Pause) and 0 < pause.seconds <= 1.0
    assert stats.retried == 1 and len(outbox) == 1  # the refused one, back in front
    payload, count = steps.send(None)
    assert count == 1
    assert steps.send([b"1-2"]) is IDLE
    with pytest.raises(StopIteration):
        steps.send(False)  # the driver says stop (closing, or idle too long)
    assert stats.published == 3 and outbox.idle


def test_an_io_error_is_retried_never_raised() -> None:
    outbox, stats, _ = buffered(Job(n=0))
    steps = Drain(outbox, stats, serve=True).steps()
    next(steps)
    assert isinstance(steps.throw(ConnectionRefusedError()), Pause)
    assert len(outbox) == 1 and stats.published == 0


def test_an_exit_drain_waits_for_another_threads_batch_then_stops() -> None:
    outbox, stats, _ = buffered(Job(n=0))
    elsewhere = outbox.take(10)  # in flight on another thread
    steps = Drain(outbox, stats, serve=False, until=time.monotonic() + 30).steps()
    assert next(steps) == Pause(0.01)
    outbox.settle(elsewhere, [])
    with pytest.raises(StopIteration):
        steps.send(None)


def test_an_exit_drain_past_its_time_drops_what_expired() -> None:
    outbox, stats, _ = buffered(Job(n=0), deadline=0.001)
    time.sleep(0.01)
    with pytest.raises(StopIteration):
        next(Drain(outbox, stats, serve=False, until=time.monotonic() - 1).steps())
    assert stats.dropped == 1 and outbox.idle


def test_an_interrupted_batch_is_looked_up_not_sent_again() -> None:
    outbox, stats, _ = buffered(Job(n=0), Job(n=1))
    drain = Drain(outbox, stats, serve=True)
    steps = drain.steps()
    next(steps)
    with pytest.raises(KeyboardInterrupt):  # the driver cancelled mid-send
        steps.throw(KeyboardInterrupt())
    assert drain.sending is not None
    written, lost = (p.prepared for p in drain.sending)
    lookup = drain.settle_interrupted()
    payload, count = next(lookup)
    assert count == 1 and b"XREVRANGE" in payload and written.stream_key.encode() in payload
    entries: list[Any] = [[b"0-1", [b"type", b"Job", b"id", written.event_id.encode()]]]
    with pytest.raises(StopIteration):
        lookup.send([entries])  # an entry older than the batch: the lookup ends there
    assert stats.published == 1
    [again] = outbox.take(10)
    assert again.prepared is lost


async def test_publish_many_refusals_are_eventbus_errors_with_their_cause(bus: EventBus) -> None:
    await bus.redis.set(bus.keys.stream("pings"), "not a stream")
    with pytest.raises(PublishManyError) as info:
        await bus.publish_many([Job(n=0), Ping(n=1)])
    refusal = info.value.failed[1]
    assert isinstance(refusal, PublishError) and not isinstance(refusal, RedisError)
    assert isinstance(refusal.__cause__, ResponseError) and "WRONGTYPE" in str(refusal)


async def test_an_unreachable_redis_is_a_publish_error_chained_to_its_cause(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus("redis://u:s3cret@127.0.0.1:1/0", "p")
    with pytest.raises(PublishError) as published:
        await bus.publish(Job(n=1))
    assert isinstance(published.value.__cause__, (RedisError, OSError))
    with pytest.raises(ConnectionFailed) as info:
        await bus.check_connection(timeout=timedelta(milliseconds=200))
    message = str(info.value)
    assert "--" not in message and "EVENTBUS_REDIS_URL" in message, message
    assert info.value.url == "redis://u:***@127.0.0.1:1/0"
    assert "s3cret" not in message
    assert isinstance(info.value.__cause__, (RedisError, OSError))


async def test_timeouts_take_a_timedelta(bus: EventBus) -> None:
    bus.publish_nowait(Job(n=1))
    assert await bus.flush(timedelta(seconds=10))
    await bus.check_connection(timedelta(seconds=5))
    with pytest.raises(ConfigurationError, match="timeout"):
        await bus.flush(-1)


def test_sync_timeouts_take_a_timedelta(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    with SyncPublisher.from_url(eventbus_redis_url, service="t", prefix=eventbus_prefix) as pub:
        assert pub.publish_nowait(Job(n=1), block_timeout=timedelta(seconds=1))
        assert pub.flush(timedelta(seconds=10))
        assert pub.publish_stats.published == 1
