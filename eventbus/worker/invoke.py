"""Calling one handler: an async one on the loop, a sync one in a thread of its own pool,
each within its timeout."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from eventbus.context import Context
from eventbus.events import Event
from eventbus.worker.delivery import Delivery

if TYPE_CHECKING:
    from eventbus.handlers import HandlerSpec


class HandlerCancelled(Exception):
    """The handler raised CancelledError without the worker cancelling it."""


class Invoker:
    """Runs one handler for one group consumer.

    A sync handler that outlives its timeout fails the attempt at once, but a thread
    cannot be stopped: its future is kept on the delivery (``overrun``) and its slot
    stays taken until the thread returns, so the pool never queues work behind it.
    """

    def __init__(self, spec: HandlerSpec) -> None:
        self._spec = spec
        self._executor = (
            None
            if spec.is_async
            else ThreadPoolExecutor(spec.concurrency, thread_name_prefix=f"eventbus-{spec.name}")
        )
        self._stopping = False

    def stop(self) -> None:
        """The worker is stopping: a CancelledError from now on is its own."""
        self._stopping = True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, event: Event, ctx: Context | None, delivery: Delivery) -> Exception | None:
        """Run the handler; its failure, or None when it returned. A CancelledError the
        handler raised itself is a failure (HandlerCancelled); the worker's goes through."""
        spec = self._spec
        try:
            if self._executor is not None:
                await self._in_thread(event, ctx, delivery)
            else:
                awaitable = spec.call(event, ctx)
                assert awaitable is not None
                if spec.timeout_s is None:
                    await awaitable
                else:
                    async with asyncio.timeout(spec.timeout_s):
                        await awaitable
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping or (task is not None and task.cancelling()):
                raise  # the worker cancelled it
            return HandlerCancelled("the handler raised CancelledError")
        except Exception as exc:
            return exc
        return None

    async def _in_thread(self, event: Event, ctx: Context | None, delivery: Delivery) -> None:
        assert self._executor is not None
        spec = self._spec
        # the handler's thread runs in a copy of this task's context: the delivery's span
        # is current there too, so its own spans and publishes join the trace
        run = contextvars.copy_context().run
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, run, spec.call, event, ctx
        )
        if spec.timeout_s is None:
            await future
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), spec.timeout_s)
        except TimeoutError:
            # the attempt fails now; the slot stays taken until the thread returns
            delivery.overrun = future
            raise
