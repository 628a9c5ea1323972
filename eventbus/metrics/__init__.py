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

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import REGISTRY, Metric
from prometheus_client.registry import Collector

from eventbus.histogram import Histogram
from eventbus.metrics.process import publish_families, scheduler_families, worker_families
from eventbus.metrics.queue import QueueFigures

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.schedules.scheduler import Scheduler
    from eventbus.worker.runner import Worker

log = logging.getLogger("eventbus.metrics")


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
        names = set(streams)
        if worker is not None:
            names |= {c.stream for c in worker.consumers}
        self.queue = QueueFigures(bus, streams=names, scheduler=scheduler, cache_s=cache_s)

    def collect(self) -> Iterator[Metric]:
        yield from publish_families(self.bus)
        if self.worker is not None:
            yield from worker_families(self.worker)
        if self.scheduler is not None:
            yield from scheduler_families(self.scheduler)
        yield from self.queue.families()

    def close(self) -> None:
        self.queue.close()


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


__all__ = ["EventbusCollector", "Histogram", "install", "serve_metrics"]
