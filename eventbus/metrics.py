"""Prometheus metrics, recorded off the hot path.

The worker, the publisher and the scheduler count into plain Python counters and small
histograms (an int increment, a bisect); nothing touches prometheus_client per event. A
collector turns them into metric families when Prometheus scrapes, and reads the queue
figures (stream length, lag, pending, oldest pending age, consumers, dead letters,
schedule times) from Redis at that moment: one pipelined round per scrape (a Lua script
per stream reads its groups and their oldest pending entries server-side), cached for a
second. When Redis
does not answer, the scrape still succeeds: the in-process figures and
``eventbus_redis_up 0``.

    collector = install(bus, worker=worker, scheduler=scheduler)   # into REGISTRY
    start_http_server(9464)                                        # or --metrics-port

Metric names and labels are the ones of the design contract ("Observability"); every
one is documented in docs/operations.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from eventbus.histogram import Histogram
from eventbus.scripts import source
from eventbus.streamid import ms_of
from eventbus.text import as_text
from eventbus.timefmt import parse_iso

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.schedules.scheduler import Scheduler
    from eventbus.worker.runner import Worker

log = logging.getLogger("eventbus.metrics")


def _histogram(
    name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in series:
        family.add_metric(values, hist.buckets(), hist.total)
    return family


# schedules a scheduler ran within this long are reported by every collector (a week:
# a schedule removed from the code stops being reported, and alerted on, after that)
SCHEDULE_MEMORY_S = 7 * 86400


class EventbusCollector(Collector):
    """Yields eventbus's metrics at scrape time (see the module docstring)."""

    def __init__(
        self,
        bus: EventBus,
        *,
        worker: Worker | None = None,
        scheduler: Scheduler | None = None,
        streams: Iterable[str] = (),
        cache_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.worker = worker
        self.scheduler = scheduler
        self._streams = set(streams)
        if worker is not None:
            self._streams |= {c.stream for c in worker.consumers}
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

    def collect(self) -> Iterator[Metric]:
        yield from self._publish_metrics()
        if self.worker is not None:
            yield from self._worker_metrics(self.worker)
        if self.scheduler is not None:
            yield from self._scheduler_metrics(self.scheduler)
        yield from self._redis_metrics()

    # -- in-process counters -----------------------------------------------------------

    def _publish_metrics(self) -> Iterator[Metric]:
        stats = self.bus.publish_stats
        with stats.lock:  # publishers on other threads add keys while we read
            by_outcome = dict(stats.by_outcome)
            dropped_by_stream = dict(stats.dropped_by_stream)
            durations = sorted(stats.durations.items())
        published = CounterMetricFamily(
            "eventbus_events_published",
            "Events published, by stream, type and outcome (ok, duplicate, error, dropped).",
            labels=["stream", "type", "outcome"],
        )
        for (stream, type_name, outcome), count in sorted(by_outcome.items()):
            published.add_metric([stream, type_name, outcome], count)
        yield published
        yield _histogram(
            "eventbus_publish_duration_seconds",
            "Time from a publish call (or a publish_nowait batch) to Redis's reply.",
            ["method"],
            [([method], hist) for method, hist in durations],
        )
        buffered = GaugeMetricFamily(
            "eventbus_publish_buffer_events", "Events publish_nowait holds, not yet written."
        )
        buffered.add_metric([], self.bus.buffered)
        yield buffered
        buffered_bytes = GaugeMetricFamily(
            "eventbus_publish_buffer_bytes",
            "Encoded bytes publish_nowait holds, not yet written (bounded by buffer_bytes).",
        )
        buffered_bytes.add_metric([], self.bus.buffered_bytes)
        yield buffered_bytes
        dropped = CounterMetricFamily(
            "eventbus_publish_dropped",
            "publish_nowait events given up (buffer full, or deadline passed).",
            labels=["stream"],
        )
        # a series for every stream published to, zero until something is dropped, so
        # rate() and increase() have something to work on from the start
        streams = {stream for stream, _, _ in by_outcome} | set(dropped_by_stream)
        for stream in sorted(streams):
            dropped.add_metric([stream], dropped_by_stream.get(stream, 0))
        yield dropped

    def _worker_metrics(self, worker: Worker) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "eventbus_events_handled",
            "Deliveries handled, by outcome: ok, error (a failed attempt, retried later), "
            "dead (dead-lettered: a last failed attempt, or undecodable), duplicate "
            "(idempotent, done before), skipped (not for this handler).",
            labels=["stream", "group", "handler", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "eventbus_handlers_in_flight", "Handlers running now.", labels=["stream", "group"]
        )
        reclaimed = CounterMetricFamily(
            "eventbus_messages_reclaimed",
            "Entries claimed by XAUTOCLAIM: retries and crash recovery.",
            labels=["stream", "group"],
        )
        trimmed = CounterMetricFamily(
            "eventbus_dlq_trimmed",
            "Dead letters the dead-letter stream's cap (dlq_maxlen) cut to make room.",
            labels=["stream", "group"],
        )
        durations, ages = [], []
        for c in worker.consumers:
            s = c.stats
            outcomes = (
                ("ok", s.ok),
                ("error", s.errors),
                ("dead", s.dead),
                ("duplicate", s.duplicates),
                ("skipped", s.skipped),
            )
            for outcome, count in outcomes:
                handled.add_metric([c.stream, c.group, c.spec.name, outcome], count)
            in_flight.add_metric([c.stream, c.group], c.in_flight)
            reclaimed.add_metric([c.stream, c.group], s.reclaimed)
            trimmed.add_metric([c.stream, c.group], s.dlq_trimmed)
            durations.append(([c.stream, c.group, c.spec.name], s.duration))
            ages.append(([c.stream, c.group], s.age))
        yield handled
        yield in_flight
        yield reclaimed
        yield trimmed
        yield _histogram(
            "eventbus_handler_duration_seconds",
            "Handler run time.",
            ["stream", "group", "handler"],
            durations,
        )
        yield _histogram(
            "eventbus_event_age_seconds",
            "Time from publish (the stream id's clock) to the handler's start.",
            ["stream", "group"],
            ages,
        )

    def _scheduler_metrics(self, scheduler: Scheduler) -> Iterator[Metric]:
        fires = CounterMetricFamily(
            "eventbus_schedule_fires",
            "Ticks handled by this scheduler, by outcome: fired (it wrote the events), "
            "duplicate (another replica had), skipped (misfire policy), error.",
            labels=["schedule", "outcome"],
        )
        for name, s in sorted(scheduler.stats.items()):
            outcomes = (
                ("fired", s.fired),
                ("duplicate", s.duplicates),
                ("skipped", s.skipped),
                ("error", s.errors),
            )
            for outcome, count in outcomes:
                fires.add_metric([name, outcome], count)
        yield fires

    # -- read from Redis at scrape time ------------------------------------------------

    def _redis_metrics(self) -> list[Metric]:
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
            url = self.bus.url
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
        keys = self.bus.keys
        streams = sorted(self._streams)
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
        return {s.name for s in self.scheduler.schedules} if self.scheduler else set()

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


def install(
    bus: EventBus,
    *,
    worker: Worker | None = None,
    scheduler: Scheduler | None = None,
    streams: Iterable[str] = (),
    registry: CollectorRegistry = REGISTRY,
    cache_s: float = 1.0,
) -> EventbusCollector:
    """Register a collector for this bus (and worker/scheduler) in `registry`.

    The Redis-read figures cover the worker's streams plus `streams` (for a service
    that only publishes, name the streams whose backlog it should report).
    """
    collector = EventbusCollector(
        bus, worker=worker, scheduler=scheduler, streams=streams, cache_s=cache_s
    )
    registry.register(collector)
    return collector


def serve_metrics(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve ``/metrics`` on `port` from a daemon thread."""
    start_http_server(port, registry=registry)
    log.info("metrics on http://0.0.0.0:%d/metrics", port)


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


__all__ = ["EventbusCollector", "Histogram", "install", "serve_metrics"]
