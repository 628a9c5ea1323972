"""``eventbus run``: a worker for an app."""

from __future__ import annotations

import argparse
import logging

from eventbus.bus import EventBus
from eventbus.cli.loader import load_app, service_name
from eventbus.worker import Worker, WorkerSettings

log = logging.getLogger("eventbus.cli")


async def run(args: argparse.Namespace) -> int:
    router = load_app(args.app)
    service = args.service or service_name(args.app)
    bus = EventBus.from_url(
        args.redis_url, service=service, prefix=args.prefix, data_dir=args.data_dir
    )
    try:
        await bus.check_connection(args.connect_timeout)
        worker = Worker(
            bus, router, consumer=args.consumer, settings=WorkerSettings(grace=args.grace)
        )
        for consumer in worker.consumers:
            log.info(
                "handler %s: group %s on stream %s (concurrency %d)",
                consumer.spec.name, consumer.group, consumer.stream, consumer.spec.concurrency,
            )  # fmt: skip
        await worker.run()
    finally:
        await bus.aclose()
    return 0
