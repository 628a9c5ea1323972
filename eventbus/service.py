"""Running workers and schedulers until SIGTERM/SIGINT, then stopping them gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from eventbus.durations import Duration

log = logging.getLogger("eventbus")


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: Duration | None = None) -> None: ...

    def request_stop(self, *, force: bool = False) -> None: ...


class Runs:
    """Base of the services: ``async with service:`` starts it and stops it on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self, grace: Duration | None = None) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    services: Sequence[Service],
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
) -> None:
    """Start `services`, wait for SIGTERM/SIGINT (or `stop`), stop them all gracefully.
    A second signal asks every service to stop at once (skipping grace periods)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: stopping now", sig.name)
            for service in services:
                service.request_stop(force=True)
            return
        log.info("%s: stopping gracefully (send it again to stop at once)", sig.name)
        stop.set()

    # installed before the services start: a SIGTERM while a worker waits for its
    # groups (handlers may already run) must stop it gracefully, not kill the process
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        await _start_unless_stopped(services, stop)
        await stop.wait()
        # the handlers stay installed while the services stop: a second signal then
        # hurries them instead of killing the process mid-shutdown
        await asyncio.gather(*(service.stop() for service in services))
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _start_unless_stopped(services: Sequence[Service], stop: asyncio.Event) -> None:
    """Start the services in turn; a stop requested meanwhile ends the wait for the one
    starting (it is stopped with the others)."""
    for service in services:
        starting = asyncio.ensure_future(service.start())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait({starting})
            return
        starting.result()  # a start that failed (PermissionDenied, say) raises here
