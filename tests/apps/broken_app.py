"""An app with a handler declared wrong: importing it raises ConfigurationError (the
handler's parameter has no annotation, so its event types are unknown). For the tests of
``eventbus check`` and ``eventbus asyncapi``; nothing else imports it."""

from __future__ import annotations

from eventbus import Router

router = Router()


@router.subscribe(concurrency=4)
async def untyped(event) -> None:  # type: ignore[no-untyped-def]
    return None
