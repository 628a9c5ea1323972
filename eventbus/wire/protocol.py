"""The sans-IO part of a connection, shared by the asyncio and the blocking transport:
the reply parser, collecting an exchange's replies, and the handshake (AUTH, SELECT,
CLIENT SETNAME) as one pipelined request whose replies are checked here.

We speak RESP2 (no HELLO): the hot path reads raw replies and relies on their shapes.
"""

from __future__ import annotations

import select
from typing import Any

import hiredis

from eventbus.backoff import Backoff
from eventbus.errors import describe_error
from eventbus.wire.errors import (
    AuthenticationFailed,
    AuthReply,
    ConnectionLost,
    ConnectTimeout,
    IncompleteExchange,
    Refusal,
    ReplyError,
    parse_error,
)
from eventbus.wire.options import ConnectionOptions
from eventbus.wire.packing import Arg, pack

# the pause before another connect attempt (when `connect_retries` allows one)
CONNECT_BACKOFF = Backoff(initial=0.05, maximum=0.5, jitter=1.0)

NOT_ENOUGH_DATA = object()
READ_SIZE = 65536


def new_parser() -> hiredis.Reader:
    """A reply parser: error replies become values (a `ReplyError`, or a `Refusal`), so
    a multi-reply exchange stays in step; bytes stay bytes."""
    return hiredis.Reader(replyError=parse_error, notEnoughData=NOT_ENOUGH_DATA)


def take_replies(
    parser: hiredis.Reader, out: list[Any], wanted: int, *, refusals_end: bool = True
) -> bool:
    """Move complete replies from `parser` to `out`; True once `out` holds `wanted`.
    A refusal (a wrong login, LOADING: redis-py's connection-class errors) ends the
    exchange like a broken connection, unless `refusals_end` is False."""
    while len(out) < wanted:
        reply = parser.gets()
        if reply is NOT_ENOUGH_DATA:
            return False
        if refusals_end and isinstance(reply, Refusal):
            raise reply
        out.append(reply)
    return True


def lost(exc: BaseException, out: list[Any], timeout: float | None) -> IncompleteExchange:
    """The error for an exchange that broke half-way (the connection is then closed)."""
    if isinstance(exc, TimeoutError):
        return IncompleteExchange(f"no reply from Redis within {timeout}s", out)
    return IncompleteExchange(f"connection to Redis lost: {describe_error(exc)}", out)


def connect_failed(
    options: ConnectionOptions, exc: BaseException, *, stage: str
) -> ConnectTimeout | ConnectionLost:
    """The error for a connection that could not be made (`stage`: "connecting to",
    "shaking hands with")."""
    if isinstance(exc, TimeoutError):
        return ConnectTimeout(f"timed out {stage} Redis at {options.address}")
    return ConnectionLost(f"failed {stage} Redis at {options.address}: {describe_error(exc)}")


def closed_by_server() -> ConnectionLost:
    return ConnectionLost("Redis closed the connection")


def handshake(options: ConnectionOptions) -> tuple[bytes, int]:
    """The commands a new connection sends before any other, pipelined, and how many
    replies they get; None when there is nothing to say (no login, db 0, no name)."""
    commands: list[list[Arg]] = []
    username, password = options.login()
    # as redis-py: a user logs in with their password, or "" (an ACL user with nopass);
    # a password alone logs in the default user; an empty one is no login at all
    if username:
        commands.append(["AUTH", username, password or ""])
    elif password:
        commands.append(["AUTH", password])
    if options.db:
        commands.append(["SELECT", options.db])
    if options.client_name:
        commands.append(["CLIENT", "SETNAME", options.client_name])
    return b"".join(pack(c) for c in commands), len(commands)


def check_handshake(options: ConnectionOptions, replies: list[Any]) -> None:
    """Raise the first error of the handshake's replies: a refused login as
    `AuthenticationFailed` naming the user and the fix; anything else as it came."""
    for reply in replies:
        if isinstance(reply, AuthReply) or (
            isinstance(reply, ReplyError) and reply.code in ("WRONGPASS", "NOAUTH")
        ):
            raise refused_login(options, reply)
        if isinstance(reply, ReplyError | Refusal):
            raise reply


def refused_login(options: ConnectionOptions, reply: BaseException) -> AuthenticationFailed:
    username, password = options.login()
    user = username or "default"
    text = getattr(reply, "reply", "") or describe_error(reply)
    if password is None:
        fix = "the server requires a login: give a password (redis://:PASSWORD@host:port/db)"
    else:
        fix = (
            "check the username and password (redis://USER:PASSWORD@host:port/db), and that "
            f"the user exists and is enabled (ACL SETUSER {user} on >PASSWORD)"
        )
    return AuthenticationFailed(
        f"Redis at {options.address} refused the login of user {user!r} ({text}); {fix}"
    )


def readable_now(fd: int) -> bool:
    """True when the socket `fd` has something to read (or is closed) right now: asked of
    the kernel with a zero-timeout poll (select() cannot take descriptors >= 1024); a
    descriptor that cannot be asked counts as readable, so its connection is replaced."""
    try:
        if not hasattr(select, "poll"):  # Windows: select() has no descriptor limit there
            return bool(select.select([fd], [], [], 0)[0])
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
