"""The worker: runs every handler's group consumers and shuts them down gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable

from eventbus.bus import EventBus
from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError, describe_error
from eventbus.handlers import HandlerSpec
from eventbus.router import Router
from eventbus.service import Runs, serve
from eventbus.worker.consumer import GroupConsumer
from eventbus.worker.janitor import Janitor
from eventbus.worker.preflight import check_permissions
from eventbus.worker.settings import WorkerSettings

log = logging.getLogger("eventbus.worker")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class Worker(Runs):
    """Consumes every handler of an app, each through its own consumer group.

        worker = Worker(bus, router)
        await worker.run()          # until SIGTERM / SIGINT

    or ``async with Worker(bus, router): ...`` to run it in the background.
    """

    def __init__(
        self,
        bus: EventBus,
        app: Router | Iterable[HandlerSpec],
        *,
        consumer: str | None = None,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings or WorkerSettings()
        self.consumer_name = consumer or default_consumer_name()
        specs = app.handlers if isinstance(app, Router) else list(app)
        self.consumers: list[GroupConsumer] = []
        seen: dict[tuple[str, str], str] = {}
        for spec in specs:
            group = spec.group(bus.service)
            for stream in spec.streams:
                other = seen.get((stream, group))
                if other is not None:
                    raise ConfigurationError(
                        f"handler {spec.name!r}: group {group!r} on stream {stream!r} is also "
                        f"used by handler {other!r}; give one of them another name= or group="
                    )
                seen[(stream, group)] = spec.name
                self.consumers.append(
                    GroupConsumer(bus, spec, stream, self.consumer_name, self.settings)
                )
        self.janitors = [
            Janitor(bus, stream, self.settings.janitor_interval_s)
            for stream in sorted({c.stream for c in self.consumers})
        ]
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._started = False
        self._stopped = False
        self._start_failed: BaseException | None = None

    async def start(self, *, timeout: Duration | None = None) -> None:
        """Start every group consumer and wait until their groups exist in Redis (within
        `timeout`, seconds or a timedelta, when given)."""
        timeout_s = None if timeout is None else seconds(timeout, name="Worker.start: timeout")
        if self._start_failed is not None:
            raise ConfigurationError(
                f"this Worker's start failed ({describe_error(self._start_failed)}); "
                "build a new Worker to try again"
            )
        if self._started:
            return
        self._started = True
        try:
            async with asyncio.timeout(timeout_s):
                await check_permissions(self.bus, self.consumers)
            for consumer in self.consumers:
                consumer.start()
            for janitor in self.janitors:
                janitor.start()
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(c.wait_ready() for c in self.consumers))
        except asyncio.CancelledError:
            raise  # a stop requested during the start: the caller stops it, with grace
        except BaseException as exc:
            # a start that fails (PermissionDenied, a timeout) leaves nothing running:
            # the groups that did start would go on handling events unseen; those
            # already handling one finish it within the grace period
            self._start_failed = exc
            await asyncio.shield(self.stop())
            raise
        log.info(
            "worker %s running %d group(s) on %s",
            self.consumer_name,
            len(self.consumers),
            self.bus.display_url,
        )

    def request_stop(self, *, force: bool = False) -> None:
        """Ask `run()` to stop (safe from signal handlers); `force` skips the grace period."""
        if force:
            self._hurry.set()
        self._stop_requested.set()

    async def stop(self, grace: Duration | None = None) -> None:
        """Stop reading, give in-flight handlers `grace` (seconds or a timedelta; default
        the settings' grace), release the rest."""
        if self._stopped or not self._started:
            return
        grace_s = (
            self.settings.grace_s if grace is None else seconds(grace, name="Worker.stop: grace")
        )
        self._stopped = True
        deadline = asyncio.get_running_loop().time() + grace_s
        await asyncio.gather(*(c.stop(deadline, self._hurry) for c in self.consumers))
        await asyncio.gather(*(j.stop() for j in self.janitors))
        # what handlers handed to publish_nowait goes out before the worker is done
        if not await self.bus.flush(timeout=max(5.0, grace_s)):
            log.warning("worker %s: publish_nowait buffer not flushed in time", self.consumer_name)
        log.info("worker %s stopped", self.consumer_name)

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until `request_stop()` or SIGTERM/SIGINT (a second signal skips the grace)."""
        await serve(
            [self], stop=self._stop_requested, install_signal_handlers=install_signal_handlers
        )

    def stats(self) -> dict[str, dict[str, int]]:
        return {f"{c.stream}/{c.group}": c.stats.as_dict() for c in self.consumers}
