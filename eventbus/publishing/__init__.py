"""Publishing, shared by the async bus and the sync publisher: settings (`settings`),
events into commands (`core`), the sans-IO protocols of a call (`batch`) and of the
flush loop (`drain`), counters (`stats`), the fire-and-forget buffer (`outbox`), what
both faces share (`base`), and their drivers: asyncio (`aio`), threads (`threads`) over
blocking I/O (`blocking`), and the flush at interpreter exit (`exiting`)."""

from eventbus.publishing.core import PublishResult
from eventbus.publishing.settings import Overflow, PublishSettings
from eventbus.publishing.stats import PublishStats

__all__ = ["Overflow", "PublishResult", "PublishSettings", "PublishStats"]
