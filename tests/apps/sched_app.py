"""A scheduler app for process tests: ``eventbus scheduler tests.apps.sched_app``.

One schedule, "beat": spec ``SCHED_SPEC`` (default every second), misfire
``SCHED_MISFIRE`` (default once), grace 60 s. Each tick publishes ``Beat(tick=<ISO>)``.
"""

from __future__ import annotations

import os
from datetime import datetime

from eventbus import Router
from tests.apps.events import Beat

router = Router()


@router.schedule(
    os.environ.get("SCHED_SPEC", "* * * * * *"),
    name="beat",
    misfire=os.environ.get("SCHED_MISFIRE", "once"),  # type: ignore[arg-type]
    misfire_grace=60,
)
def beat(tick: datetime) -> Beat:
    return Beat(tick=tick.isoformat())
