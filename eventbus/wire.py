"""The hot path's Redis I/O: commands packed by hand, sent on redis-py connections.

redis-py's generic command path (argument encoding, per-command response callbacks,
its pipeline machinery) costs more CPU than the round trip itself for the commands a
bus sends millions of times: XADD, XREADGROUP, XACK. Here they are packed into RESP
bytes directly and their replies read raw (RESP2 shapes, parsed by hiredis), on
connections borrowed from the client's pool. Everything else (group management,
XINFO, the rarer scripts) uses the ordinary redis-py client.

Connection safety: a connection whose request failed or was cancelled half-way is
disconnected before it goes back to the pool, so no later caller reads a stale reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import select
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.connection import AbstractConnection as SyncConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus.errors import describe_error

Arg = bytes | str | int | float


def _pack_python(args: Sequence[Arg]) -> bytes:
    """One command in RESP: ``*<n> $<len> <arg> ...``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class IncompleteExchange(RedisConnectionError):
    """The connection failed after the request was (maybe) sent. `replies` holds the
    replies read before the failure: the commands after them may or may not have run."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies


async def exchange(conn: AbstractConnection, payload: bytes, replies: int) -> list[Any]:
    """Send packed commands on `conn` and read `replies` replies. An error reply becomes
    a ResponseError in the list (the others are still read, keeping the connection in
    step); a transport error disconnects `conn` and raises IncompleteExchange with the
    replies read so far; a cancellation disconnects it and propagates."""
    out: list[Any] = []
    try:
        # one timeout for the whole exchange, not one per reply (redis-py's default)
        async with asyncio.timeout(conn.socket_timeout):
            await _send(conn, payload)
            read = _reply_reader(conn)
            for _ in range(replies):
                try:
                    out.append(await read())
                except ResponseError as exc:
                    out.append(exc)
    except TimeoutError as exc:  # asyncio's: the socket timeout passed
        await conn.disconnect(nowait=True)
        raise IncompleteExchange(f"no reply from Redis within {conn.socket_timeout}s", out) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await conn.disconnect(nowait=True)
        raise IncompleteExchange(f"connection to Redis lost: {describe_error(exc)}", out) from exc
    except BaseException:
        # nowait: a stalled socket must not hold up a cancellation or a timeout
        await conn.disconnect(nowait=True)
        raise
    return out


def exchange_sync(conn: SyncConnection, payload: bytes, replies: int) -> list[Any]:
    """`exchange` for redis-py's synchronous connections (the sync publisher)."""
    out: list[Any] = []
    try:
        conn.send_packed_command([payload], check_health=False)  # type: ignore[no-untyped-call]
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except ResponseError as exc:
                out.append(exc)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise IncompleteExchange(f"connection to Redis lost: {describe_error(exc)}", out) from exc
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    return out


def _reply_reader(conn: AbstractConnection) -> Callable[[], Awaitable[Any]]:
    """How to read one reply: straight from redis-py's hiredis parser when that is the
    parser (error replies come back as ResponseError values, which is what exchange
    keeps), else through the connection (a timeout wrapper and a raise per error)."""
    parser = getattr(conn, "_parser", None)
    if type(parser).__name__ == "_AsyncHiredisParser" and hasattr(parser, "read_response"):
        return parser.read_response  # type: ignore[no-any-return, union-attr]
    return lambda: conn.read_response(timeout=math.inf)


async def _send(conn: AbstractConnection, payload: bytes) -> None:
    """Write to the connection's stream; redis-py's send_packed_command would wrap the
    write in asyncio.wait_for (a task per command), where our exchange has one timeout."""
    writer = getattr(conn, "_writer", None)
    if writer is None or not conn.is_connected:
        await conn.send_packed_command(payload, check_health=False)
        return
    writer.write(payload)
    await writer.drain()


def is_dead(conn: AbstractConnection) -> bool:
    """True when an idle connection must not carry a request: its transport is closing or
    gone, the event loop saw EOF, or its socket is readable (the server closed it, and the
    event loop has not noticed yet, or sent something unasked).

    redis-py's pool checks through the event loop only, which may not have seen the
    server's FIN yet (a Redis restart while the loop was busy); a zero-timeout select on
    the socket asks the kernel directly, as go-redis does before reusing a connection.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None:  # not a stream connection we know how to inspect: trust it
        return False
    reader = getattr(conn, "_reader", None)
    transport = writer.transport
    if transport is None or transport.is_closing():
        return True
    if reader is not None and reader.at_eof():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:  # TLS transports drop their socket once the peer has closed
        return True
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _pack_hiredis(args: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # stub: 1-tuple
    return packed


try:
    import hiredis

    hiredis.pack_command(("PING",))
except (ImportError, AttributeError):  # hiredis missing or too old: pack in Python
    pack = _pack_python
else:
    pack = _pack_hiredis


class Script:
    """A Lua script called by EVALSHA, loaded on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def evalsha(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    def eval(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVAL", self.source, len(keys), *keys, *args]


class Pooled:
    """Hand-packed requests on a free list of connections made like the client's own.

    A free list rather than redis-py's pool: taking and returning a connection there
    costs locks and observability hooks on every command, about as much as the rest
    of a publish. Callers bound their concurrency (the bus's publish semaphore, one
    ack flush per group), which bounds the connections made here.
    """

    def __init__(self, client: Redis, *, keep_idle: int = 64) -> None:
        self.client = client
        self._pool = client.connection_pool
        self._idle: list[AbstractConnection] = []
        self._all: set[AbstractConnection] = set()
        self._keep_idle = keep_idle
        self._closed = False

    async def request(self, payload: bytes, replies: int = 1) -> list[Any]:
        """Run packed commands. Never resent after a transport error: the server may have
        run them (a resent XADD is a duplicate event). An idle connection that died (a
        server restart, an idle timeout, CLIENT KILL) is replaced before anything is
        written to it."""
        if self._closed:
            raise RedisConnectionError("the connection pool is closed")
        conn = self._idle.pop() if self._idle else self._new()
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
            elif is_dead(conn):
                await conn.disconnect(nowait=True)
                await conn.connect()  # type: ignore[no-untyped-call]
            return await exchange(conn, payload, replies)
        finally:
            await self._put_back(conn)

    def _new(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.connection_class(**self._pool.connection_kwargs)
        self._all.add(conn)
        return conn

    async def _put_back(self, conn: AbstractConnection) -> None:
        if not self._closed and len(self._idle) < self._keep_idle:
            self._idle.append(conn)
            return
        # closed meanwhile, or more idle connections than a busy moment needs
        self._all.discard(conn)
        await conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail, later ones raise."""
        self._closed = True
        conns, self._all, self._idle = self._all, set(), []
        await asyncio.gather(*(c.disconnect(nowait=True) for c in conns), return_exceptions=True)

    async def call(self, *args: Arg) -> Any:
        """One command; an error reply raises."""
        [reply] = await self.request(pack(args))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await run_script(self.call, script, keys, args)


async def run_script(call: Any, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
    try:
        return await call(*script.evalsha(keys, args))
    except NoScriptError:
        return await call(*script.eval(keys, args))


class Dedicated:
    """One connection of its own (for blocking reads), reconnected on demand."""

    def __init__(self, client: Redis, *, socket_timeout: float | None) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = socket_timeout
        self._conn: AbstractConnection = pool.connection_class(**kwargs)
        self.client_id: int | None = None

    async def connect(self) -> None:
        """Connect if needed and learn our CLIENT ID (for CLIENT UNBLOCK)."""
        if self.client_id is None or not self._conn.is_connected:
            self.client_id = None
            await self._conn.connect()  # type: ignore[no-untyped-call]
            [reply] = await exchange(self._conn, pack(["CLIENT", "ID"]), 1)
            if isinstance(reply, ResponseError):  # NOPERM: the user may not run CLIENT ID
                raise reply
            self.client_id = int(reply)

    async def call(self, *args: Arg) -> Any:
        await self.connect()
        [reply] = await exchange(self._conn, pack(args), 1)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await run_script(self.call, script, keys, args)

    def reset(self) -> None:
        """Forget the connection state after an error (the next call reconnects)."""
        self.client_id = None

    async def aclose(self) -> None:
        await self._conn.disconnect(nowait=True)
