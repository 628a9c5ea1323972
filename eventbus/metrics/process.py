"""The in-process metric families: what this process counted (publishes, handled
deliveries, schedule ticks), turned into Prometheus families at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from eventbus.histogram import Histogram

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.schedules.scheduler import Scheduler
    from eventbus.worker.runner import Worker


def histogram_family(
    name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in series:
        family.add_metric(values, hist.buckets(), hist.total)
    return family


def publish_families(bus: EventBus) -> Iterator[Metric]:
    """The publisher's counters: events by outcome, durations, buffer, drops."""
    stats = bus.publish_stats
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
    yield histogram_family(
        "eventbus_publish_duration_seconds",
        "Time from a publish call (or a publish_nowait batch) to Redis's reply.",
        ["method"],
        [([method], hist) for method, hist in durations],
    )
    buffered = GaugeMetricFamily(
        "eventbus_publish_buffer_events", "Events publish_nowait holds, not yet written."
    )
    buffered.add_metric([], bus.buffered)
    yield buffered
    buffered_bytes = GaugeMetricFamily(
        "eventbus_publish_buffer_bytes",
        "Encoded bytes publish_nowait holds, not yet written (bounded by buffer_bytes).",
    )
    buffered_bytes.add_metric([], bus.buffered_bytes)
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


def worker_families(worker: Worker) -> Iterator[Metric]:
    """The worker's counters per group: handled by outcome, in flight, reclaimed,
    dead letters trimmed, handler durations, event ages."""
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
    yield histogram_family(
        "eventbus_handler_duration_seconds",
        "Handler run time.",
        ["stream", "group", "handler"],
        durations,
    )
    yield histogram_family(
        "eventbus_event_age_seconds",
        "Time from publish (the stream id's clock) to the handler's start.",
        ["stream", "group"],
        ages,
    )


def scheduler_families(scheduler: Scheduler) -> Iterator[Metric]:
    """The scheduler's ticks by outcome."""
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
