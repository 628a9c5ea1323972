"""eventbus: typed events on Redis Streams, fanout with isolation, nothing lost.

from eventbus import Event, EventBus, Router, Context

class NoteCreated(Event, stream="notes"):
    note_id: str

router = Router()

@router.subscribe(max_attempts=5)
async def index_note(event: NoteCreated, ctx: Context) -> None: ...
"""

from eventbus.backoff import Backoff
from eventbus.bus import EventBus
from eventbus.context import Context
from eventbus.errors import (
    ConfigurationError,
    ConnectionFailed,
    DecodeError,
    EmbeddedServerError,
    EventBusError,
    EventTypeError,
    PublishError,
)
from eventbus.events import Event
from eventbus.router import Router, default_router, subscribe
from eventbus.worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "ConfigurationError",
    "ConnectionFailed",
    "Context",
    "DecodeError",
    "EmbeddedServerError",
    "Event",
    "EventBus",
    "EventBusError",
    "EventTypeError",
    "PublishError",
    "Router",
    "Worker",
    "WorkerSettings",
    "__version__",
    "default_router",
    "subscribe",
]
