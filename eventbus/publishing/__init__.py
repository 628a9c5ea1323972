"""Publishing, shared by the async bus and the sync publisher: validation and commands
(`core`), the fire-and-forget buffer (`outbox`), async I/O (`aio`)."""

from eventbus.publishing.core import PublishResult
from eventbus.publishing.outbox import Overflow, PublishStats

__all__ = ["Overflow", "PublishResult", "PublishStats"]
