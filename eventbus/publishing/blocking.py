"""Blocking I/O for publishing: exchanges on connections of a redis-py client's
(thread-safe) pool, safe across a fork. The thread driver (`publishing.threads`) runs
the protocols over it."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import redis

from eventbus.wire import exchange_sync

SyncIO = Callable[[bytes, int], list[Any]]


def client_io(client: redis.Redis) -> SyncIO:
    """Blocking exchanges on connections of `client`'s (thread-safe) pool."""
    pool = client.connection_pool
    _fork_safe(pool)

    def request(payload: bytes, replies: int) -> list[Any]:
        conn = pool.get_connection()
        try:
            return exchange_sync(conn, payload, replies)
        finally:
            pool.release(conn)

    return request


def _fork_safe(pool: redis.ConnectionPool) -> None:
    """Hold the pool's lock across a fork, so that no other thread (our flusher, taking
    a connection) holds it at that instant: a child would inherit it locked, and
    redis-py's reset() in the child (run even by the client's __del__ at exit) takes it
    before replacing it, so the child hung forever at exit. Held weakly: a collected
    pool's hooks do nothing. (Our own transport, planned, will not need this.)"""
    ref = weakref.ref(pool)
    lock: Any = getattr(pool, "_lock", None)
    if lock is None:  # a redis-py without it: nothing to guard
        return

    held = [False]

    def before() -> None:
        if ref() is not None:
            lock.acquire()  # an RLock: the forking thread owns it in parent and child
            held[0] = True

    def after() -> None:
        if held[0]:
            held[0] = False
            lock.release()

    os.register_at_fork(before=before, after_in_parent=after, after_in_child=after)
