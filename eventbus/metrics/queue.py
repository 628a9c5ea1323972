"""The queue figures read from Redis at scrape time: stream and dead-letter lengths, each
group's lag, pending, oldest pending age and consumers, and the schedules' times. One
pipelined round per scrape (a Lua script per stream reads its groups server-side),
cached for a moment; ``eventbus_redis_up`` says whether the read succeeded."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from eventbus.scripts import source
from eventbus.streamid import ms_of
from eventbus.text import as_text
from eventbus.timefmt import parse_iso

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.schedules.scheduler import Scheduler

log = logging.getLogger("eventbus.metrics")

# schedules a scheduler ran within this long are reported by every collector (a week:
# a schedule removed from the code stops being reported, and alerted on, after that)
SCHEDULE_MEMORY_S = 7 * 86400


class QueueFigures:
    """Reads the figures of `streams` (and the schedules) from the bus's Redis."""

    def __init__(
        self,
        bus: EventBus,
        *,
        streams: Iterable[str],
        scheduler: Scheduler | None = None,
        cache_s: float = 1.0,
    ) -> None:
        self._bus = bus
        self._scheduler = scheduler
        self.streams = set(streams)
        self._cache_s = cache_s
        # read at -inf: the first scrape reads Redis (time.monotonic() may be small)
        self._cached: tuple[float, list[Metric]] = (float("-inf"), [])
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._schedules: set[str] = set()  # in the schedule index at the last scrape
        # EVALSHA straight away (a registered redis-py Script would ask SCRIPT EXISTS first,
        # a second round trip per scrape); loaded on NOSCRIPT
        self._figures = source("queue_figures")
        self._figures_sha = hashlib.sha1(self._figures.encode()).hexdigest()

    def families(self) -> list[Metric]:
        """The families, from the cache when it is fresh; never raises."""
        with self._lock:
            at, cached = self._cached
            if time.monotonic() - at < self._cache_s:
                return cached
            up = GaugeMetricFamily(
                "eventbus_redis_up",
                "1 when this scrape read the queue figures from Redis, 0 when it could not.",
            )
            try:
                metrics = self._read_redis()
                up.add_metric([], 1)
            except (redis.RedisError, OSError) as exc:
                log.warning("metrics: reading queue figures from Redis failed: %s", exc)
                metrics = []
                up.add_metric([], 0)
            except Exception:  # a reply nobody foresaw: the rest of the scrape still answers
                log.exception("metrics: the queue figures read from Redis made no sense")
                metrics = []
                up.add_metric([], 0)
            metrics.append(up)
            self._cached = (time.monotonic(), metrics)
            return metrics

    def _redis(self) -> redis.Redis:
        if self._client is None:
            url = self._bus.url
            if url is None:
                raise redis.ConnectionError("the bus has no URL to read metrics with")
            # no retries, short timeouts: a scrape must answer within Prometheus's
            # scrape_timeout (10 s by default) even when Redis does not
            self._client = redis.Redis.from_url(
                url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
            )
        return self._client

    def _read_redis(self, *, loaded: bool = False) -> list[Metric]:
        """One pipelined round: a script per stream (length, dead letters, and each
        group's consumers, pending, lag and oldest pending entry), the schedule index,
        and the state of the schedules known so far. A schedule new to the index costs
        one more round, once."""
        client = self._redis()
        keys = self._bus.keys
        streams = sorted(self.streams)
        known = sorted(self._schedules | self._scheduler_names())
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.evalsha(self._figures_sha, 2, keys.stream(stream), keys.dlq(stream))
        pipe.zrangebyscore(keys.schedule_index(), time.time() - SCHEDULE_MEMORY_S, "+inf")
        for name in known:
            pipe.hmget(keys.schedule(name), "last_fired_at", "next_tick")
        replies = pipe.execute(raise_on_error=False)
        if not loaded and any(isinstance(r, NoScriptError) for r in replies[: len(streams)]):
            client.script_load(self._figures)  # a new or restarted server: once, then again
            return self._read_redis(loaded=True)
        lengths, dlq, groups_by_stream, oldest = _parse_figures(streams, replies)
        indexed = replies[len(streams)]
        states = self._states(known, replies[len(streams) + 1 :])
        if not isinstance(indexed, Exception):
            new = sorted({as_text(n, errors="backslashreplace") for n in indexed} - set(known))
            self._schedules = {as_text(n, errors="backslashreplace") for n in indexed}
            if new:  # first seen: read their state now rather than on the next scrape
                pipe = client.pipeline(transaction=False)
                for name in new:
                    pipe.hmget(keys.schedule(name), "last_fired_at", "next_tick")
                states |= self._states(new, pipe.execute(raise_on_error=False))
        return [
            *self._stream_families(lengths, dlq),
            *self._group_families(groups_by_stream, oldest),
            *self._schedule_families(states),
        ]

    def _scheduler_names(self) -> set[str]:
        return {s.name for s in self._scheduler.schedules} if self._scheduler else set()

    @staticmethod
    def _states(names: list[str], replies: list[Any]) -> dict[str, tuple[Any, Any]]:
        return {
            name: (state[0], state[1])
            for name, state in zip(names, replies, strict=True)
            if isinstance(state, list)
        }

    @staticmethod
    def _stream_families(lengths: dict[str, int], dlq: dict[str, int]) -> list[Metric]:
        length = GaugeMetricFamily(
            "eventbus_stream_length", "Entries in the stream (XLEN).", labels=["stream"]
        )
        dead = GaugeMetricFamily(
            "eventbus_dlq_length", "Entries in the stream's dead-letter stream.", labels=["stream"]
        )
        for stream in sorted(lengths):
            length.add_metric([stream], lengths[stream])
            dead.add_metric([stream], dlq[stream])
        return [length, dead]

    @staticmethod
    def _group_families(
        groups_by_stream: dict[str, list[dict[str, Any]]],
        oldest: dict[tuple[str, str], float],
    ) -> list[Metric]:
        labels = ["stream", "group"]
        lag = GaugeMetricFamily(
            "eventbus_group_lag",
            "Entries the group has not read yet (Redis >= 7; absent when unknown).",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "eventbus_group_pending", "Entries read and not acknowledged.", labels=labels
        )
        age = GaugeMetricFamily(
            "eventbus_group_oldest_pending_seconds",
            "Age of the group's oldest pending entry (0 when none).",
            labels=labels,
        )
        consumers = GaugeMetricFamily(
            "eventbus_group_consumers", "Consumers in the group.", labels=labels
        )
        for stream, groups in sorted(groups_by_stream.items()):
            for g in groups:
                values = [stream, g["name"]]
                if g["lag"] is not None:
                    lag.add_metric(values, g["lag"])
                pending.add_metric(values, g["pending"])
                age.add_metric(values, oldest.get((stream, values[1]), 0.0))
                consumers.add_metric(values, g["consumers"])
        return [lag, pending, age, consumers]

    @staticmethod
    def _schedule_families(states: dict[str, tuple[Any, Any]]) -> list[Metric]:
        if not states:
            return []
        last = GaugeMetricFamily(
            "eventbus_schedule_last_fire_timestamp_seconds",
            "When any replica last fired the schedule (Unix time).",
            labels=["schedule"],
        )
        upcoming = GaugeMetricFamily(
            "eventbus_schedule_next_fire_timestamp_seconds",
            "The schedule's next tick (Unix time).",
            labels=["schedule"],
        )

        for name, (fired, nxt) in sorted(states.items()):
            for family, raw in ((last, fired), (upcoming, nxt)):
                if not raw:
                    continue
                try:
                    family.add_metric(
                        [name], parse_iso(as_text(raw, errors="backslashreplace")).timestamp()
                    )
                except ValueError:  # someone else's junk in the state hash: skip the value
                    log.debug("metrics: schedule %r holds an unparseable time %r", name, raw)
        return [last, upcoming]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _parse_figures(
    streams: list[str], replies: list[Any]
) -> tuple[
    dict[str, int], dict[str, int], dict[str, list[dict[str, Any]]], dict[tuple[str, str], float]
]:
    """The queue_figures replies: lengths, dead letters, groups, oldest pending ages."""
    now = time.time()
    lengths: dict[str, int] = {}
    dlq: dict[str, int] = {}
    groups_by_stream: dict[str, list[dict[str, Any]]] = {}
    oldest: dict[tuple[str, str], float] = {}
    for stream, reply in zip(streams, replies, strict=False):
        if isinstance(reply, Exception):
            continue  # e.g. the key holds something else: report nothing made up
        try:
            lengths[stream], dlq[stream] = int(reply[0]), int(reply[1])
        except (TypeError, ValueError, IndexError):
            log.debug("metrics: stream %r: unexpected figures %r", stream, reply)
            continue
        groups_by_stream[stream] = []
        for row in reply[2:]:
            try:
                name, consumers, pending, lag, first = row
                group = as_text(name, errors="backslashreplace")
                figures = {
                    "name": group,
                    "consumers": int(consumers),
                    "pending": int(pending),
                    "lag": None if int(lag) < 0 else int(lag),
                }
                ms = ms_of(as_text(first, errors="backslashreplace")) if first else None
            except (TypeError, ValueError):  # one odd group: report the others
                log.debug("metrics: stream %r: unexpected group figures %r", stream, row)
                continue
            groups_by_stream[stream].append(figures)
            if ms is not None:
                oldest[(stream, group)] = max(0.0, now - ms / 1000)
    return lengths, dlq, groups_by_stream, oldest
