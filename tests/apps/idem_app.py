"""An idempotent worker app for crash tests: ``eventbus run tests.apps.idem_app``.

Each Job's effect is ``HINCRBY <prefix>:effects <n> 1``: queued on ``ctx.transaction()``
(``IDEM_MODE=tx``, the default), so it is applied with the done marker and the ack or not
at all; or written directly (``IDEM_MODE=plain``), key-based idempotency only.
``<prefix>:calls`` counts handler starts. Environment: ``IDEM_DELAY`` (seconds the
handler takes), ``IDEM_LEASE``, ``IDEM_EXIT_AFTER=<n>``: on its first attempt, job n's
handler finishes its work and the process dies before the worker can commit or ack.
"""

from __future__ import annotations

import asyncio
import os

from eventbus import Context, Router
from tests.apps.events import Job

router = Router()
DELAY = float(os.environ.get("IDEM_DELAY", "0"))
MODE = os.environ.get("IDEM_MODE", "tx")
EXIT_AFTER = int(os.environ.get("IDEM_EXIT_AFTER", "-1"))


@router.subscribe(
    name="exactly-once",
    idempotent=True,
    concurrency=8,
    lease=float(os.environ.get("IDEM_LEASE", "2")),
    backoff=0.1,
    max_attempts=20,
)
async def apply(event: Job, ctx: Context) -> None:
    prefix = ctx.bus.keys.prefix
    await ctx.bus.redis.hincrby(f"{prefix}:calls", str(event.n), 1)
    if MODE == "tx":
        ctx.transaction().hincrby(f"{prefix}:effects", str(event.n), 1)
    else:
        await ctx.bus.redis.hincrby(f"{prefix}:effects", str(event.n), 1)
    if DELAY:
        await asyncio.sleep(DELAY)  # a crash in here loses the queued write: nothing applied
    if event.n == EXIT_AFTER and ctx.attempt == 1:
        os._exit(9)  # the handler's work is done; the worker dies before commit and ack
