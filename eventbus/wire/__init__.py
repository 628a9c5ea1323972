"""The hot path's Redis I/O: a small transport of our own, commands packed by hand.

redis-py's generic command path (argument encoding, per-command response callbacks,
its pipeline machinery) costs more CPU than the round trip itself for the commands a
bus sends millions of times: XADD, XREADGROUP, XACK. Here they are packed into RESP
bytes directly (`packing`), sent on connections we open ourselves (`transport` for
asyncio, `syncconn` for threads: TCP, unix socket or TLS, our own handshake, one
deadline per exchange) and their replies read raw (RESP2 shapes, parsed by hiredis).
The options come from a URL or from the user's redis-py client (`options`), which still
serves everything else (group management, XINFO, the rarer scripts).

Connection safety: a connection whose exchange failed or was cancelled half-way is
closed, so no later caller reads a stale reply; nothing is resent.

Modules: errors (the error types, error replies parsed), packing (RESP), options
(where and how to connect), protocol (sans-IO: parser, replies, handshake), transport
(asyncio connection), pool (NodePool, Pooled, Dedicated), syncconn (blocking
connection and pool), scripts (EVALSHA with an EVAL fallback).
"""

from eventbus.wire.errors import (
    AuthenticationFailed,
    ConnectionLost,
    ConnectTimeout,
    IncompleteExchange,
    NoPermission,
    NoScript,
    Refusal,
    ReplyError,
)
from eventbus.wire.options import ConnectionOptions, TLSOptions
from eventbus.wire.packing import Arg, pack
from eventbus.wire.pool import Dedicated, NodePool, Pooled
from eventbus.wire.scripts import Script, run_script
from eventbus.wire.syncconn import SyncConnection, SyncPool
from eventbus.wire.transport import Connection

__all__ = [
    "Arg",
    "AuthenticationFailed",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "ConnectionOptions",
    "Dedicated",
    "IncompleteExchange",
    "NoPermission",
    "NoScript",
    "NodePool",
    "Pooled",
    "Refusal",
    "ReplyError",
    "Script",
    "SyncConnection",
    "SyncPool",
    "TLSOptions",
    "pack",
    "run_script",
]
