"""Where the bus connects: the URL (given, from the environment, or an embedded server),
the shared client built from it, and the URL as it may be shown (password redacted)."""

from __future__ import annotations

import os

import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from eventbus.embedded import EmbeddedRedis
from eventbus.envelope import Encoding, content_type
from eventbus.errors import ConfigurationError
from eventbus.keys import Keys, check_name

ENV_URL = "EVENTBUS_REDIS_URL"
# The pool's hard cap. Past it redis-py fails a command ("Too many connections"), so
# it sits far above what the bus itself uses (publishes + a few per group).
POOL_MAX_CONNECTIONS = 1024


def redact(url: str) -> str:
    """A URL with any password replaced by ``***``, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}" if creds else url


def resolve_url(
    url: str | None,
    *,
    service: str,
    prefix: str,
    encoding: Encoding,
    data_dir: str | os.PathLike[str] | None,
) -> tuple[str, EmbeddedRedis | None]:
    """Validate a publisher's settings, then the URL to use: `url`, else
    ``$EVENTBUS_REDIS_URL``, else the embedded server for `data_dir` (started now if none
    runs there; returned too, for its owner to close)."""
    check_name("service", service)
    Keys(prefix)  # validates the prefix before any server starts
    content_type(encoding)
    url = url or os.environ.get(ENV_URL) or None
    if url is not None:
        return url, None
    embedded = EmbeddedRedis(None if data_dir is None else os.fspath(data_dir))
    return embedded.ensure(), embedded


def make_client(url: str) -> Redis:
    """The shared client: a pool; one quick internal retry so a connection dropped by a
    server restart is replaced transparently. Longer outages surface as errors."""
    try:
        pool = ConnectionPool.from_url(
            url,
            max_connections=POOL_MAX_CONNECTIONS,
            # RESP2: eventbus.wire reads raw replies and relies on their shapes
            protocol=2,
            socket_timeout=10,
            socket_connect_timeout=5,
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1),
        )
    except ValueError as exc:
        raise _invalid_url(url, exc) from None
    return Redis.from_pool(pool)


def make_sync_client(url: str, *, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    """A blocking client (thread-safe pool) for code without an event loop: the sync
    publisher, the flush at interpreter exit."""
    try:
        return redis.Redis.from_url(
            url, protocol=2, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
        )
    except ValueError as exc:
        raise _invalid_url(url, exc) from None


def _invalid_url(url: str, exc: ValueError) -> ConfigurationError:
    return ConfigurationError(
        f"invalid Redis URL {redact(url)!r}: {exc}; expected redis://host:port/db, "
        "rediss://..., or unix:///path/to/redis.sock"
    )
