"""Waits that end early: a sleep cut short when the component stops."""

from __future__ import annotations

import asyncio


async def wait_for_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass (None: no limit); True when
    the event was set. The stop-aware sleep of every loop: ``if await
    wait_for_event(self._stop, interval): return``."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
