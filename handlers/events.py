"""The notes stream's event types."""

from __future__ import annotations

from eventbus import Event


class NoteCreated(Event, stream="notes"):
    note_id: str
    author: str
    title: str
    body: str = ""


class NoteDeleted(Event, stream="notes"):
    note_id: str
