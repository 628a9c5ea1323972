"""eventbus: typed events on Redis Streams, fanout with isolation, nothing lost.

from eventbus import Event, EventBus, Router, Context

class NoteCreated(Event, stream="notes"):
    note_id: str

router = Router()

@router.subscribe(max_attempts=5)
async def index_note(event: NoteCreated, ctx: Context) -> None: ...
"""

from eventbus.backoff import Backoff
from eventbus.bus import EventBus, PublishSettings
from eventbus.context import Context
from eventbus.errors import (
    BufferFull,
    ConfigurationError,
    ConnectionFailed,
    DecodeError,
    EmbeddedServerError,
    EventBusError,
    EventTooLarge,
    EventTypeError,
    PermissionDenied,
    PublishError,
    PublishManyError,
)
from eventbus.events import Event
from eventbus.publishing import PublishResult, PublishStats
from eventbus.router import Router, default_router, subscribe
from eventbus.streams import Stream
from eventbus.sync import SyncPublisher
from eventbus.worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BufferFull",
    "ConfigurationError",
    "ConnectionFailed",
    "Context",
    "DecodeError",
    "EmbeddedServerError",
    "Event",
    "EventBus",
    "EventBusError",
    "EventTooLarge",
    "EventTypeError",
    "PermissionDenied",
    "PublishError",
    "PublishManyError",
    "PublishResult",
    "PublishSettings",
    "PublishStats",
    "Router",
    "Stream",
    "SyncPublisher",
    "Worker",
    "WorkerSettings",
    "__version__",
    "default_router",
    "subscribe",
]
