"""redis-py's errors as eventbus errors, the cause chained: what a public function lets
out is an `EventBusError`, whatever Redis said.

- a server that refuses us (NOPERM, a wrong password): `PermissionDenied` or
  `ConnectionFailed`, naming the fix (`permissions.refused`);
- the connection lost, or no answer in time: `ConnectionFailed`;
- any other error reply (MOVED, WRONGTYPE, OOM...): `CommandFailed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus.errors import CommandFailed, ConnectionFailed, EventBusError, describe_error
from eventbus.permissions import is_refusal, refused


def translate(
    exc: RedisError, *, url: str | None, display_url: str, user: str | None = None
) -> EventBusError:
    """The eventbus error for `exc` (raise it ``from exc``)."""
    if is_refusal(exc):
        return refused(exc, url=url, display_url=display_url, user=user)
    message = f"Redis failed the command: {describe_error(exc)}"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return ConnectionFailed(message)
    return CommandFailed(message)


@contextlib.contextmanager
def redis_errors(
    *, url: str | None = None, display_url: str = "Redis", user: str | None = None
) -> Iterator[None]:
    """Raise what redis-py raises inside the block as an eventbus error (`translate`)."""
    try:
        yield
    except RedisError as exc:
        raise translate(exc, url=url, display_url=display_url, user=user) from exc


def client_errors(client: Any) -> contextlib.AbstractContextManager[None]:
    """`redis_errors` for a bare redis-py client: where it connects and as whom (for a
    NOPERM's fix), from its pool's connection settings."""
    pool = getattr(client, "connection_pool", None)
    settings = getattr(pool, "connection_kwargs", None) or {}
    if settings.get("path"):
        where = f"unix://{settings['path']}"
    else:
        where = f"redis://{settings.get('host', '?')}:{settings.get('port', '?')}"
    return redis_errors(display_url=where, user=settings.get("username"))
