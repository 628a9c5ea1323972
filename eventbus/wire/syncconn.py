"""The blocking twin of `transport` and `pool`, for threads (the sync publisher, its
flusher thread, the exit drain): a socket we open, the same handshake, one deadline per
exchange, and a connection closed whenever an exchange is left half done.

Fork safety: a pool used in a child process drops the connections its parent made,
neither closing them (which would cut the parent's session: TLS close_notify, QUIT) nor
writing to them (two processes on one socket read each other's replies).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
import weakref
from typing import Any

from eventbus.wire.errors import ConnectionLost, ConnectTimeout
from eventbus.wire.options import ConnectionOptions
from eventbus.wire.protocol import (
    CONNECT_BACKOFF,
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


class SyncConnection:
    """An open blocking connection; `open` makes one (connected, handshake done)."""

    def __init__(self, sock: socket.socket, options: ConnectionOptions) -> None:
        self._sock = sock
        self._parser = new_parser()
        self.options = options
        self.pid = os.getpid()
        self.closed = False

    @classmethod
    def open(cls, options: ConnectionOptions, context: ssl.SSLContext | None) -> SyncConnection:
        timeout = options.handshake_timeout
        deadline = _deadline(timeout)
        try:
            sock = _open_socket(options, context, deadline)
        except OSError as exc:  # socket.timeout included
            raise connect_failed(options, exc, stage="connecting to") from exc
        conn = cls(sock, options)
        try:
            conn._handshake(deadline)
        except BaseException:
            conn.close()
            raise
        return conn

    def _handshake(self, deadline: float | None) -> None:
        payload, count = handshake(self.options)
        if not count:
            return
        replies: list[Any] = []
        try:
            self._send(payload, deadline)
            self._read(replies, count, deadline, refusals_end=False)
        except OSError as exc:
            raise connect_failed(self.options, exc, stage="shaking hands with") from exc
        check_handshake(self.options, replies)

    def exchange(self, payload: bytes, replies: int) -> list[Any]:
        """`transport.Connection.exchange`, blocking: one deadline for the whole
        exchange; anything half done closes the connection."""
        timeout = self.options.socket_timeout
        out: list[Any] = []
        try:
            deadline = _deadline(timeout)
            self._send(payload, deadline)
            self._read(out, replies, deadline)
        except Exception as exc:  # socket.timeout, ConnectionLost, Refusal, a bad reply
            self.close()
            raise lost(exc, out, timeout) from exc
        except BaseException:
            self.close()
            raise
        return out

    def _send(self, payload: bytes, deadline: float | None) -> None:
        self._sock.settimeout(_left(deadline))
        self._sock.sendall(payload)

    def _read(
        self, out: list[Any], wanted: int, deadline: float | None, *, refusals_end: bool = True
    ) -> None:
        parser = self._parser
        while not take_replies(parser, out, wanted, refusals_end=refusals_end):
            self._sock.settimeout(_left(deadline))
            data = self._sock.recv(READ_SIZE)
            if not data:
                raise closed_by_server()
            parser.feed(data)

    def is_dead(self) -> bool:
        """`transport.Connection.is_dead`: closed, or readable while idle."""
        if self.closed:
            return True
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            return True  # something unasked, already decrypted
        try:
            fd = self._sock.fileno()
        except OSError:
            return True
        return fd < 0 or readable_now(fd)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def forget(self) -> None:
        """Let go of a connection inherited over a fork: this process's descriptor goes,
        the connection itself (the parent's) is left as it is."""
        self.closed = True
        with contextlib.suppress(OSError):
            os.close(self._sock.detach())


class SyncPool:
    """`pool.NodePool`, blocking and thread-safe: requests on a free list of
    connections to one node. Fork-safe (see the module docstring)."""

    def __init__(self, options: ConnectionOptions, *, keep_idle: int = 8) -> None:
        self.options = options
        self._ssl = None if options.tls is None else options.tls.context()
        self._keep_idle = keep_idle
        self._idle: list[SyncConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        # sockets left when the pool is collected are closed, not left to the GC
        weakref.finalize(self, _close_all, self._idle)

    @classmethod
    def for_client(cls, client: Any) -> SyncPool:
        """A pool with the options of a redis-py client (blocking or asyncio)."""
        return cls(ConnectionOptions.from_client(client))

    def request(self, payload: bytes, replies: int = 1) -> list[Any]:
        """Run packed commands (see `NodePool.request`): never resent, a dead idle
        connection replaced before anything is written to it."""
        conn = self._take()
        try:
            return conn.exchange(payload, replies)
        finally:
            self._put_back(conn)

    def _take(self) -> SyncConnection:
        if self._closed:
            raise ConnectionLost("the connection pool is closed")
        if self._pid != os.getpid():
            self._after_fork()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return _connect(self.options, self._ssl)
            if not conn.is_dead():
                return conn
            conn.close()

    def _put_back(self, conn: SyncConnection) -> None:
        if conn.closed:
            return
        if conn.pid != os.getpid():  # made before a fork that happened meanwhile
            conn.forget()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._keep_idle:
                self._idle.append(conn)
                return
        conn.close()  # closed meanwhile, or more idle than a busy moment needs

    def _after_fork(self) -> None:
        # this process has one thread: no one else holds the lock, or ever will
        self._lock = threading.Lock()
        self._pid = os.getpid()
        _close_all(self._idle)  # made in the parent: forgotten, not closed

    def close(self) -> None:
        """Close the idle connections (one in use closes when it comes back); later
        requests raise ConnectionLost."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
        _close_all(idle)


def _close_all(conns: list[SyncConnection]) -> None:
    """Close what this process made; forget what it inherited over a fork."""
    for conn in conns:
        if conn.pid == os.getpid():
            conn.close()
        else:
            conn.forget()
    conns.clear()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (None: no deadline); a passed one raises."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the exchange's deadline passed")
    return left


def _open_socket(
    options: ConnectionOptions, context: ssl.SSLContext | None, deadline: float | None
) -> socket.socket:
    """Connect (and for TLS, shake TLS hands) before `deadline`, which the Redis
    handshake that follows shares."""
    if options.path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(options.path)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((options.host, options.port), timeout=_left(deadline))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock.settimeout(_left(deadline))
            return context.wrap_socket(sock, server_hostname=options.host)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect(options: ConnectionOptions, context: ssl.SSLContext | None) -> SyncConnection:
    """`pool.connect`, blocking: `options.connect_retries` more tries after a failure."""
    failures = 0
    while True:
        try:
            return SyncConnection.open(options, context)
        except (ConnectionLost, ConnectTimeout):
            failures += 1
            if failures > options.connect_retries:
                raise
        time.sleep(CONNECT_BACKOFF.delay(failures))
