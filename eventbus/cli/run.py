"""``eventbus run`` (a worker and a scheduler) and ``eventbus scheduler``."""

from __future__ import annotations

import argparse
import logging

from eventbus.bus import EventBus
from eventbus.cli.connect import bus_for, reach
from eventbus.cli.loader import load_app, service_name
from eventbus.errors import ConfigurationError
from eventbus.schedules.scheduler import Scheduler
from eventbus.service import Service, serve
from eventbus.worker import Worker, WorkerSettings

log = logging.getLogger("eventbus.cli")


async def run(args: argparse.Namespace) -> int:
    """The worker for the app's handlers and the scheduler for its schedules, unless
    --no-worker / --no-scheduler (or the app has none)."""
    router = load_app(args.app)
    want_worker = not getattr(args, "no_worker", False) and bool(router.handlers)
    want_scheduler = not getattr(args, "no_scheduler", False) and bool(router.schedules)
    if not (want_worker or want_scheduler):
        raise ConfigurationError(
            f"app {args.app!r}: nothing to run (handlers: {len(router.handlers)}, "
            f"schedules: {len(router.schedules)}, with --no-worker/--no-scheduler as given)"
        )
    bus = bus_for(args, service=args.service or service_name(args.app))
    worker: Worker | None = None
    scheduler_: Scheduler | None = None
    try:
        await reach(bus, args.connect_timeout)
        services: list[Service] = []
        if want_worker:
            worker = Worker(
                bus, router, consumer=args.consumer, settings=WorkerSettings(grace=args.grace)
            )
            for consumer in worker.consumers:
                log.info(
                    "handler %s: group %s on stream %s (concurrency %d)",
                    consumer.spec.name,
                    consumer.group,
                    consumer.stream,
                    consumer.spec.concurrency,
                )
            services.append(worker)
        if want_scheduler:
            for schedule in router.schedules:
                log.info(
                    "schedule %s: %r in %s (misfire=%s)",
                    schedule.name,
                    schedule.spec,
                    schedule.tz_name,
                    schedule.misfire,
                )
            scheduler_ = Scheduler(bus, router.schedules)
            services.append(scheduler_)
        observe(args, bus, worker=worker, scheduler=scheduler_)
        await serve(services)
    finally:
        await bus.aclose()
    return 0


async def scheduler(args: argparse.Namespace) -> int:
    """Only the app's schedules."""
    args.no_worker = True
    args.no_scheduler = False
    return await run(args)


def observe(
    args: argparse.Namespace,
    bus: EventBus,
    *,
    worker: Worker | None = None,
    scheduler: Scheduler | None = None,
) -> None:
    """--metrics-port and --otel."""
    if getattr(args, "otel", False):
        from eventbus.tracing import setup_from_env

        setup_from_env(bus.service)
    if getattr(args, "metrics_port", None):
        from eventbus.metrics import install, serve_metrics

        install(bus, worker=worker, scheduler=scheduler)
        try:
            serve_metrics(args.metrics_port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on port {args.metrics_port}: {exc.strerror or exc}; "
                "choose another --metrics-port"
            ) from None
