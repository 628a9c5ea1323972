"""Await conditions, run workers in the background, isolate tests by key prefix."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from eventbus.bus import EventBus
from eventbus.durations import Duration, seconds
from eventbus.handlers import HandlerSpec
from eventbus.router import Router
from eventbus.worker import Worker, WorkerSettings


def unique_prefix(base: str = "t") -> str:
    """A fresh key prefix: tests sharing one Redis never see each other's keys."""
    return f"{base}{os.urandom(5).hex()}"


async def wait_for(
    condition: Callable[[], Awaitable[Any] | Any],
    *,
    timeout: Duration = 10.0,
    interval: Duration = 0.02,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy; return it.

    Raises TimeoutError naming `message` after `timeout` (seconds or a timedelta).
    """
    loop = asyncio.get_running_loop()
    timeout = seconds(timeout, name="timeout")
    pause = seconds(interval, name="interval")
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout}s waiting for {text}")
        await asyncio.sleep(pause)


@asynccontextmanager
async def running_worker(
    bus: EventBus,
    app: Router | Iterable[HandlerSpec],
    *,
    consumer: str | None = None,
    settings: WorkerSettings | None = None,
    grace: Duration = 5.0,
) -> AsyncIterator[Worker]:
    """Start a worker (groups created before the block runs); stop it gracefully after."""
    worker = Worker(bus, app, consumer=consumer, settings=settings or WorkerSettings(grace=grace))
    await worker.start(timeout=30)
    try:
        yield worker
    finally:
        await worker.stop()
