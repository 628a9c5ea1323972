"""Connections to one Redis node: a free list of them for requests (`NodePool`, and
`Pooled`, the one a bus makes from its redis-py client), and one of its own for
blocking reads (`Dedicated`).

One pool per node: a Cluster client keeps one `NodePool` per node address and routes by
slot; nothing here assumes there is only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

from eventbus.wire.errors import ConnectionLost, ConnectTimeout, ReplyError
from eventbus.wire.options import ConnectionOptions
from eventbus.wire.packing import Arg, pack
from eventbus.wire.protocol import CONNECT_BACKOFF
from eventbus.wire.scripts import Script, run_script
from eventbus.wire.transport import Connection


async def connect(options: ConnectionOptions, context: ssl.SSLContext | None) -> Connection:
    """A new connection, with `options.connect_retries` more tries after a failure."""
    failures = 0
    while True:
        try:
            return await Connection.open(options, context)
        except (ConnectionLost, ConnectTimeout):
            failures += 1
            if failures > options.connect_retries:
                raise
        await asyncio.sleep(CONNECT_BACKOFF.delay(failures))


def _tls_context(options: ConnectionOptions) -> ssl.SSLContext | None:
    return None if options.tls is None else options.tls.context()


class NodePool:
    """Requests on a free list of connections to one node.

    A free list: taking and returning a connection costs a list pop and append. Callers
    bound their concurrency (the bus's publish semaphore, one ack flush per group); on
    top of that at most `max_connections` are open at once (as redis-py's pool caps
    them), and a request past the cap waits for one to come back (at most the socket
    timeout) instead of opening more: the bound a cluster's per-node pools need.
    """

    def __init__(
        self, options: ConnectionOptions, *, keep_idle: int = 64, max_connections: int = 1024
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.options = options
        self.max_connections = max_connections
        self._room: asyncio.Event | None = None  # set when a connection comes back
        self._ssl = _tls_context(options)
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._hanging_up: list[Connection] = []
        self._keep_idle = keep_idle
        self._closed = False

    async def request(self, payload: bytes, replies: int = 1) -> list[Any]:
        """Run packed commands; replies in order, error replies as values. Never resent
        after a transport error: the server may have run them (a resent XADD is a
        duplicate event). An idle connection that died (a server restart, an idle
        timeout, CLIENT KILL) is replaced before anything is written to it."""
        conn = await self._take()
        try:
            return await conn.exchange(payload, replies)
        finally:
            self._put_back(conn)

    async def _take(self) -> Connection:
        while True:
            if self._closed:
                raise ConnectionLost("the connection pool is closed")
            if self._hanging_up:
                await self._after_cancelled()
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_dead():
                    return conn
                self._discard(conn)
                conn.abort()
            if len(self._all) < self.max_connections:
                break
            await self._wait_for_room()
        conn = await connect(self.options, self._ssl)
        self._all.add(conn)
        return conn

    async def _wait_for_room(self) -> None:
        """Wait until a connection comes back or goes (the cap was reached)."""
        if self._room is None or self._room.is_set():
            self._room = asyncio.Event()
        room = self._room
        try:
            async with asyncio.timeout(self.options.socket_timeout):
                await room.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"all {self.max_connections} connections to Redis at "
                f"{self.options.address} stayed in use for {self.options.socket_timeout}s"
            ) from None

    def _discard(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._made_room()

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()

    async def _after_cancelled(self) -> None:
        """A request after a cancelled one sees all that the cancelled one did (what it
        had written still ran): the publisher's exit drain looks a cut batch up in the
        stream instead of sending it again, and must not look before it has landed."""
        for conn in list(self._hanging_up):
            await conn.hung_up()
            with contextlib.suppress(ValueError):  # another request removed it first
                self._hanging_up.remove(conn)
            self._discard(conn)

    def _put_back(self, conn: Connection) -> None:
        if conn.hanging_up is not None:
            self._hanging_up.append(conn)
            self._made_room()  # a waiter takes it up (it waits for the hang-up first)
        elif conn.closed:  # its exchange broke, or the pool closed it
            self._discard(conn)
        elif not self._closed and len(self._idle) < self._keep_idle:
            self._idle.append(conn)
            self._made_room()
        else:  # closed meanwhile, or more idle connections than a busy moment needs
            self._discard(conn)
            conn.close()

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail, later ones raise."""
        self._closed = True
        conns, self._all, self._idle, self._hanging_up = self._all, set(), [], []
        for conn in conns:
            conn.abort()
        self._made_room()  # waiters wake, and find the pool closed

    async def call(self, *args: Arg) -> Any:
        """One command; an error reply raises."""
        [reply] = await self.request(pack(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await run_script(self.call, script, keys, args)


class Pooled(NodePool):
    """The pool a bus keeps for its hot-path commands, made with the options of its
    redis-py `client` (which still serves everything else)."""

    def __init__(self, client: Any, *, keep_idle: int = 64) -> None:
        super().__init__(ConnectionOptions.from_client(client), keep_idle=keep_idle)
        self.client = client


class Dedicated:
    """One connection of its own (for blocking reads), reconnected on demand."""

    def __init__(self, client: Any, *, socket_timeout: float | None) -> None:
        self.options = ConnectionOptions.from_client(client).with_socket_timeout(socket_timeout)
        self._ssl = _tls_context(self.options)
        self._conn: Connection | None = None
        self.client_id: int | None = None

    async def connect(self) -> None:
        """Connect if needed (a connection found dead is replaced) and learn our
        CLIENT ID (for CLIENT UNBLOCK)."""
        if self._conn is not None and self._conn.is_dead():
            self._conn.abort()
            self._conn = None
        if self._conn is None:
            self.client_id = None
            self._conn = await connect(self.options, self._ssl)
        if self.client_id is None:
            [reply] = await self._conn.exchange(pack(["CLIENT", "ID"]), 1)
            if isinstance(reply, ReplyError):  # NOPERM: the user may not run CLIENT ID
                raise reply
            self.client_id = int(reply)

    async def call(self, *args: Arg) -> Any:
        await self.connect()
        assert self._conn is not None
        [reply] = await self._conn.exchange(pack(args), 1)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await run_script(self.call, script, keys, args)

    def reset(self) -> None:
        """Forget the connection state after an error (the next call asks again)."""
        self.client_id = None

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.abort()
            self._conn = None
