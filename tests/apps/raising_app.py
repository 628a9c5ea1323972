"""An app whose import fails in its own code (RuntimeError), as a misconfigured service
does when a setting is missing. For the tests of ``eventbus check``; nothing else imports
it."""

from __future__ import annotations

from eventbus import Router
from tests.apps.events import Job

router = Router()


@router.subscribe
async def handle(event: Job) -> None:
    return None


raise RuntimeError("NOTES_DB_URL is not set")
