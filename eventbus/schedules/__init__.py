"""Cron schedules that emit events: declared with ``@router.schedule``, run by
`Scheduler` (``eventbus scheduler APP``, or ``eventbus run APP`` with a worker)."""

from eventbus.schedules.cron import CronSpec, validate_cron
from eventbus.schedules.scheduler import Scheduler
from eventbus.schedules.spec import ScheduleSpec

__all__ = ["CronSpec", "ScheduleSpec", "Scheduler", "validate_cron"]
