"""The notes stream's event types."""

from __future__ import annotations

from eventbus import Event


class NoteCreated(Event, stream="notes"):
    note_id: str
    author: str
    title: str
    body: str = ""
    created_at: float | None = None  # epoch seconds; default: when it is stored


class NoteDeleted(Event, stream="notes"):
    note_id: str


class CleanupOldNotes(Event, stream="notes-maintenance"):
    """Delete notes older than this many days (emitted daily by a schedule)."""

    older_than_days: int
