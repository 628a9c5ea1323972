"""The bus a command works on: built from the connection options, checked to answer,
and what fails on it reported with the command line's names (its flags)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from eventbus.bus import EventBus
from eventbus.cli.args import UsageError
from eventbus.cli.failures import explain
from eventbus.errors import ConnectionFailed, EventBusError, describe_error
from eventbus.permissions import is_refusal
from eventbus.redis_errors import redis_errors

UNREACHABLE = (
    "cannot reach Redis at {url} ({reason}); check --redis-url / EVENTBUS_REDIS_URL and "
    "that the server is up"
)


def bus_for(args: argparse.Namespace, *, service: str = "cli") -> EventBus:
    """A bus for the command's --redis-url, --prefix and --data-dir."""
    return EventBus.from_url(
        args.redis_url, service=service, prefix=args.prefix, data_dir=args.data_dir
    )


async def reach(bus: EventBus, timeout: float) -> None:
    """`bus.check_connection`, its failure to reach Redis said with the flag to change."""
    try:
        await bus.check_connection(timeout)
    except ConnectionFailed as exc:
        cause = exc.__cause__
        if exc.parts or cause is None or is_refusal(cause):  # the fix is not the URL
            raise
        reason = describe_error(cause)
        raise ConnectionFailed(UNREACHABLE.format(url=bus.display_url, reason=reason)) from cause


@contextlib.asynccontextmanager
async def connected(args: argparse.Namespace) -> AsyncIterator[EventBus]:
    """A bus for the command's --redis-url/--prefix, checked to answer; a Redis error in
    the block is raised as an eventbus error (the cause chained)."""
    bus = bus_for(args)
    try:
        await _refused(bus, min(1.0, args.connect_timeout))
        await reach(bus, args.connect_timeout)
        with redis_errors(url=bus.url, display_url=bus.display_url):
            yield bus
    finally:
        await bus.aclose()


async def _refused(bus: EventBus, timeout: float) -> None:
    """Fail at once, clearly, when Redis answers but refuses us (a wrong password, a
    missing permission, a cluster node): waiting for it to come up would not help."""
    try:
        async with asyncio.timeout(timeout):
            with redis_errors(url=bus.url, display_url=bus.display_url):
                await bus.redis.ping()
    except (EventBusError, OSError) as exc:  # TimeoutError too: check_connection waits on
        message = explain(exc)
        if message is not None:
            raise UsageError(message) from None
        # not up yet, or unreachable: check_connection waits for it
