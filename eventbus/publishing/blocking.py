"""Blocking I/O for publishing: exchanges on a thread-safe pool of our own connections,
safe across a fork. The thread driver (`publishing.threads`) runs the protocols over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from eventbus.wire import SyncPool

SyncIO = Callable[[bytes, int], list[Any]]


def client_pool(client: redis.Redis) -> SyncPool:
    """A thread-safe pool of our own connections, made with `client`'s options
    (fork-safe: a child drops the connections of its parent). Its `request` is the
    `SyncIO` the thread driver runs on; its owner closes it."""
    return SyncPool.for_client(client)
