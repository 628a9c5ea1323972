"""Cron schedules that emit events: declared with ``@router.schedule``, run by
`eventbus.schedules.scheduler.Scheduler` (``eventbus scheduler APP``, or ``eventbus run
APP`` with a worker).

This package's ``__init__`` holds only what an app declares (the model layer: cron
specs and schedule declarations), so that importing a declaration never imports the
scheduler and, through it, the bus (tests/test_layers.py).
"""

from eventbus.schedules.cron import CronSpec, validate_cron
from eventbus.schedules.spec import ScheduleSpec

__all__ = ["CronSpec", "ScheduleSpec", "validate_cron"]
