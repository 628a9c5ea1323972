"""Testing your own handlers against a real Redis with eventbus.testing.

With eventbus installed, pytest has the fixtures ``eventbus_bus`` (a bus on a
throwaway Redis, with a key prefix of its own per test), ``eventbus_redis_url``,
``eventbus_prefix`` and ``redis_server_factory``. The async tests run with pytest-asyncio
(docs/testing.md says how to set up a project).
"""

from __future__ import annotations

import pytest

from eventbus import Context, Event, EventBus, Router
from eventbus.testing import running_worker, wait_for

pytestmark = pytest.mark.asyncio  # pytest-asyncio runs this module's async tests


class UserSignedUp(Event, stream="users"):
    email: str


router = Router()
welcomed: list[str] = []


@router.subscribe(max_attempts=3, backoff=0.05)
async def welcome(event: UserSignedUp, ctx: Context) -> None:
    if ctx.attempt == 1 and event.email.endswith("@flaky.example"):
        raise ConnectionError("mail server hiccup")  # retried with backoff
    welcomed.append(event.email)


async def test_welcome_is_sent_even_after_a_hiccup(eventbus_bus: EventBus) -> None:
    async with running_worker(eventbus_bus, router):
        await eventbus_bus.publish(UserSignedUp(email="ann@example.com"))
        await eventbus_bus.publish(UserSignedUp(email="bob@flaky.example"))
        await wait_for(lambda: len(welcomed) == 2, message="two welcome mails")
    assert sorted(welcomed) == ["ann@example.com", "bob@flaky.example"]
