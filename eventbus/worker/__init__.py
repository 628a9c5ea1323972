"""The worker: group consumers implementing the delivery protocol."""

from eventbus.worker.runner import Worker
from eventbus.worker.settings import WorkerSettings

__all__ = ["Worker", "WorkerSettings"]
