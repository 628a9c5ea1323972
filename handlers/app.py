"""Handlers of the sample app: four groups on the notes stream, isolated from each other."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from datetime import datetime

from eventbus import Backoff, Context, Router
from handlers.events import CleanupOldNotes, NoteCreated, NoteDeleted
from handlers.store import NoteStore, words

router = Router()


def store(ctx: Context) -> NoteStore:
    return NoteStore(ctx.bus.redis, ctx.bus.keys.prefix)


@router.subscribe(name="note-store", concurrency=32)
async def save_note(event: NoteCreated | NoteDeleted, ctx: Context) -> None:
    """Keeps the notes themselves."""
    if isinstance(event, NoteCreated):
        await store(ctx).save(event)
    else:
        await store(ctx).delete(event.note_id)


@router.subscribe(name="search-index", concurrency=32)
async def index_note(event: NoteCreated, ctx: Context) -> None:
    """Indexes every word of a note's title and body."""
    await store(ctx).index(event)


AUDIT_LOG = "audit-log"


@router.subscribe(name="audit-log", concurrency=8, idempotent=True)
async def audit_log(event: NoteCreated | NoteDeleted, ctx: Context) -> None:
    """Appends exactly one line per event to the audit log: the write is queued on the
    delivery's transaction and applied with the idempotency marker and the ack, so a
    crash or a redelivery never adds a second line (docs/idempotency.md)."""
    what = "created" if isinstance(event, NoteCreated) else "deleted"
    line = f"{ctx.stream_id} {what} {event.note_id} from {ctx.source}"
    ctx.transaction().rpush(ctx.slot_key(AUDIT_LOG), line)


class Outbox:
    """Stands in for a mail server: remembers what was sent (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        with self._lock:
            self.sent.append(text)


outbox = Outbox()


def is_flaky(note_id: str) -> bool:
    """About 2% of notes hit a transient failure on their first delivery."""
    return zlib.crc32(note_id.encode()) % 50 == 0


@router.subscribe(
    name="notifier", concurrency=8, max_attempts=3, backoff=Backoff(initial=0.2, maximum=1.0)
)
def notify_followers(event: NoteCreated, ctx: Context) -> None:
    """A sync handler (runs in its own thread pool): fails for good on poison notes,
    and once on flaky ones, to show retries and the dead-letter stream."""
    if "poison" in words(event.title):
        raise ValueError(f"cannot render a notification for note {event.note_id}: poison")
    if is_flaky(event.note_id) and ctx.attempt == 1:
        raise ConnectionError("mail server timed out (transient)")
    outbox.send(f"{event.author} posted {event.title!r}")


log = logging.getLogger("handlers")
KEEP_NOTES_DAYS = 30


@router.schedule("0 3 * * *", name="cleanup-old-notes", tz="UTC")
def cleanup_old_notes(tick: datetime) -> CleanupOldNotes:
    """Every day at 03:00 UTC: ask for notes older than 30 days to go. However many
    scheduler replicas run, each day's request is emitted once."""
    return CleanupOldNotes(older_than_days=KEEP_NOTES_DAYS)


@router.subscribe(name="note-cleanup", concurrency=1, idempotent=True)
async def delete_old_notes(event: CleanupOldNotes, ctx: Context) -> None:
    """Deletes the notes older than the cutoff, and says so on the notes stream (the
    search index and the audit log follow the NoteDeleted events)."""
    notes = store(ctx)
    cutoff = time.time() - event.older_than_days * 86400
    while old := await notes.older_than(cutoff):
        for note_id in old:
            await notes.delete(note_id)
        await ctx.bus.publish_many([NoteDeleted(note_id=n) for n in old])
        log.info("deleted %d notes older than %d days", len(old), event.older_than_days)
