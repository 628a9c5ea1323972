"""One asyncio connection to Redis that we open ourselves: TCP, unix socket or TLS,
hiredis to parse, our own handshake, one deadline per exchange.

Connection safety: an exchange that does not finish (a timeout, a cancellation, a
transport error or a refusal mid-reply) closes the connection, so no later request can
read a stale reply; nothing is ever resent (a resent XADD is a duplicate event).
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventbus.wire.options import ConnectionOptions
from eventbus.wire.protocol import (
    READ_SIZE,
    check_handshake,
    closed_by_server,
    connect_failed,
    handshake,
    lost,
    new_parser,
    readable_now,
    take_replies,
)


class Connection:
    """An open connection; `open` makes one (connected, handshake done)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        options: ConnectionOptions,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = new_parser()
        self._timeout = options.socket_timeout
        self.options = options
        self.closed = False
        # set while a cancelled exchange's connection waits for the server to hang up
        self.hanging_up: asyncio.Lock | None = None

    @classmethod
    async def open(cls, options: ConnectionOptions, ssl: Any = None) -> Connection:
        """Connect and shake hands within the connect timeout. `ssl`: the context for a
        TLS node (built once by the caller's pool)."""
        timeout = options.handshake_timeout
        # one deadline for the connection (TLS included) and its handshake together
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await _open_streams(options, ssl)
        except OSError as exc:  # TimeoutError included
            raise connect_failed(options, exc, stage="connecting to") from exc
        conn = cls(reader, writer, options)
        try:
            await conn._handshake(deadline)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _handshake(self, deadline: float | None) -> None:
        payload, count = handshake(self.options)
        if not count:
            return
        try:
            async with asyncio.timeout_at(deadline):
                self._writer.write(payload)
                await self._writer.drain()
                replies: list[Any] = []
                await self._read(replies, count, refusals_end=False)
        except OSError as exc:
            raise connect_failed(self.options, exc, stage="shaking hands with") from exc
        check_handshake(self.options, replies)

    async def exchange(self, payload: bytes, replies: int) -> list[Any]:
        """Send packed commands and read `replies` replies, all within the socket
        timeout. An error reply becomes a value in the list (the others are still
        read); anything half done closes the connection and raises IncompleteExchange
        with the replies read so far (a cancellation propagates as itself)."""
        out: list[Any] = []
        try:
            async with asyncio.timeout(self._timeout):
                self._writer.write(payload)
                await self._writer.drain()
                await self._read(out, replies)
        except asyncio.CancelledError:
            self._hang_up()
            raise
        except Exception as exc:  # timeout, OSError (ConnectionLost), Refusal, a bad reply
            self.abort()
            raise lost(exc, out, self._timeout) from exc
        except BaseException:
            self.abort()
            raise
        return out

    def _hang_up(self) -> None:
        """End a cancelled exchange: what was written still goes out, then our side
        closes; the server runs it all, answers, and closes its side, which `hung_up`
        waits for (TLS cannot half-close: it closes at once)."""
        self.closed = True
        if self._writer.can_write_eof():
            self.hanging_up = asyncio.Lock()
            self._writer.write_eof()
        else:
            self._writer.close()

    async def hung_up(self) -> None:
        """Wait (at most the socket timeout) until the server has closed a connection
        whose exchange was cancelled: every command sent on it has then run."""
        if self.hanging_up is None:
            return
        async with self.hanging_up:
            if self._writer.transport.is_closing():
                return
            try:
                async with asyncio.timeout(self._timeout):
                    while await self._reader.read(READ_SIZE):
                        pass  # replies nobody waits for any more
            except (TimeoutError, OSError):
                pass
            finally:
                self.abort()

    async def _read(self, out: list[Any], wanted: int, *, refusals_end: bool = True) -> None:
        parser = self._parser
        while not take_replies(parser, out, wanted, refusals_end=refusals_end):
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise closed_by_server()
            parser.feed(data)

    def is_dead(self) -> bool:
        """True when this idle connection must not carry a request: its transport is
        closing or gone, the event loop saw EOF, or its socket is readable (the server
        closed it, and the event loop has not noticed yet, or sent something unasked).

        The event loop may not have seen the server's FIN yet (a Redis restart while
        the loop was busy); a zero-timeout poll asks the kernel directly, as go-redis
        does before reusing a connection.
        """
        if self.closed or self._reader.at_eof():
            return True
        transport = self._writer.transport
        if transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:  # TLS transports drop their socket once the peer has closed
            return True
        try:
            fd = sock.fileno()
        except OSError:
            return True
        return readable_now(fd)

    def abort(self) -> None:
        """Drop the connection now (nothing more is written or read)."""
        self.closed = True
        self._writer.transport.abort()

    def close(self) -> None:
        """Close the connection once what was written is flushed."""
        self.closed = True
        self._writer.close()


async def _open_streams(
    options: ConnectionOptions, ssl: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if options.path:
        return await asyncio.open_unix_connection(options.path, limit=READ_SIZE)
    return await asyncio.open_connection(
        options.host,
        options.port,
        ssl=ssl,
        server_hostname=options.host if ssl is not None else None,
        limit=READ_SIZE,
    )
