"""What the worker holds of one entry, from its read (or claim) to its ack."""

from __future__ import annotations

import asyncio
from typing import Any


class Delivery:
    """One entry we hold: read or claimed, until acked, released or dead-lettered.

    Which entries are held is the `Settler`'s alone (settle.py); on the delivery itself,
    `Claims` writes the idempotency fields (marker, token, unguarded) and the `Invoker`
    writes `overrun`.
    """

    __slots__ = (
        "count",
        "done",
        "fields",
        "marker",
        "overrun",
        "stream_id",
        "token",
        "unguarded",
    )

    def __init__(self, stream_id: str, fields: list[bytes], count: int) -> None:
        self.stream_id = stream_id
        self.fields = fields  # flat [name, value, ...] as Redis returns them
        self.count = count
        self.done = False  # handler finished; waiting for its batched XACK
        # a sync handler's thread still running after its timeout: the slot stays taken
        self.overrun: asyncio.Future[Any] | None = None
        # an idempotent handler's claim on its idempotency key, while it holds one
        self.marker: str | None = None
        self.token = ""
        # the marker of a key whose claim could not be taken (store unreachable,
        # fail_open): the handler ran unguarded, and its commit still checks the key
        self.unguarded: str | None = None
