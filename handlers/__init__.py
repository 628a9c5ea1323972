"""The sample app: notes events fanned out to a note store, a search index, an audit
log and a notifier (which fails on "poison" notes to show retries and dead letters).

Run it with ``eventbus demo`` or ``eventbus run handlers``.
"""

from handlers.app import router
from handlers.events import CleanupOldNotes, NoteCreated, NoteDeleted

__all__ = ["CleanupOldNotes", "NoteCreated", "NoteDeleted", "router"]
