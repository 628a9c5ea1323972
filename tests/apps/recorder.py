"""A worker app for fault tests, run with ``eventbus run tests.apps.recorder``.

Each handled Job is recorded in Redis: ``<prefix>:calls`` (hash n -> calls) when the
handler starts and ``<prefix>:done`` (set of n) when it finishes. Environment:
``RECORDER_DELAY`` seconds per job, ``RECORDER_CONCURRENCY``, ``RECORDER_LEASE``,
``RECORDER_MAX_ATTEMPTS``, ``RECORDER_CRASH_ON`` (a job n whose handling kills the
process, like a poison message that crashes the interpreter).
"""

from __future__ import annotations

import asyncio
import os

from eventbus import Context, Router
from tests.apps.events import Job

router = Router()

DELAY = float(os.environ.get("RECORDER_DELAY", "0"))
CRASH_ON = int(os.environ.get("RECORDER_CRASH_ON", "-1"))


@router.subscribe(
    name="recorder",
    concurrency=int(os.environ.get("RECORDER_CONCURRENCY", "8")),
    lease=float(os.environ.get("RECORDER_LEASE", "2")),
    max_attempts=int(os.environ.get("RECORDER_MAX_ATTEMPTS", "5")),
    backoff=0.1,
)
async def record(event: Job, ctx: Context) -> None:
    prefix = ctx.bus.keys.prefix
    await ctx.bus.redis.hincrby(f"{prefix}:calls", str(event.n), 1)
    if event.n == CRASH_ON:
        os._exit(17)
    if DELAY:
        await asyncio.sleep(DELAY)
    await ctx.bus.redis.sadd(f"{prefix}:done", event.n)
