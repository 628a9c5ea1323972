"""Inspect and repair streams, groups, pending entries and dead letters.

The library behind the ``eventbus`` inspection commands; usable from code too. Every
function takes an :class:`~eventbus.bus.EventBus` (for its keys and connection) and
reads or writes only what it says. Read functions never change state; the repair
functions (:func:`redrive`, :func:`purge_dead`, :func:`reset_group`,
:func:`delete_consumer`, :func:`delete_group`) take ``dry_run`` and report what they did
or would do.

Every function raises eventbus errors only: `NotFound`, `WrongType`, `Refused` (a repair
that would lose data; its message names the argument that goes ahead anyway), and what
Redis's errors become (`ConnectionFailed`, `PermissionDenied`, `CommandFailed`, their
cause the redis-py error).

One module per job: `streams` (list, describe, require), `decode` (an entry, bounded for
display), `tail` (last entries, following), `entries` (one entry and its state per
group), `pending`, `deadletters` (read, redrive, purge), `repair` (group repairs),
`snapshot` (the live view's figures); `common` holds what they share.
"""

from __future__ import annotations

from eventbus.inspection.common import Fields, NotFound, Refused, WrongType
from eventbus.inspection.deadletters import (
    MAX_REDRIVE_VALUES,
    DeadLetter,
    Redriven,
    dead_letter_traceback,
    dead_letters,
    purge_dead,
    redrive,
)
from eventbus.inspection.decode import (
    DEPTH_LIMIT,
    FIELDS_LIMIT,
    PAYLOAD_LIMIT,
    TEXT_LIMIT,
    Entry,
    clip,
    decode_entry,
    jsonable,
)
from eventbus.inspection.entries import DeliveryState, delivery_states, get_entry
from eventbus.inspection.pending import PendingEntry, pending_entries
from eventbus.inspection.repair import (
    ConsumerRemoval,
    GroupRemoval,
    ResetPlan,
    delete_consumer,
    delete_group,
    reset_group,
    resolve_position,
)
from eventbus.inspection.snapshot import GroupFigures, Snapshot, rate, snapshot
from eventbus.inspection.streams import (
    DLQ_SCAN,
    ConsumerDetail,
    GroupDetail,
    StreamDetail,
    StreamSummary,
    list_streams,
    require_group,
    require_stream,
    stream_detail,
    stream_names,
)
from eventbus.inspection.tail import Tail, follow, tail

__all__ = [
    "DEPTH_LIMIT",
    "DLQ_SCAN",
    "FIELDS_LIMIT",
    "MAX_REDRIVE_VALUES",
    "PAYLOAD_LIMIT",
    "TEXT_LIMIT",
    "ConsumerDetail",
    "ConsumerRemoval",
    "DeadLetter",
    "DeliveryState",
    "Entry",
    "Fields",
    "GroupDetail",
    "GroupFigures",
    "GroupRemoval",
    "NotFound",
    "PendingEntry",
    "Redriven",
    "Refused",
    "ResetPlan",
    "Snapshot",
    "StreamDetail",
    "StreamSummary",
    "Tail",
    "WrongType",
    "clip",
    "dead_letter_traceback",
    "dead_letters",
    "decode_entry",
    "delete_consumer",
    "delete_group",
    "delivery_states",
    "follow",
    "get_entry",
    "jsonable",
    "list_streams",
    "pending_entries",
    "purge_dead",
    "rate",
    "redrive",
    "require_group",
    "require_stream",
    "reset_group",
    "resolve_position",
    "snapshot",
    "stream_detail",
    "stream_names",
    "tail",
]
