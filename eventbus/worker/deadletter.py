"""What a dead-letter entry records besides the original fields, bounded in size."""

from __future__ import annotations

import traceback

from eventbus.envelope import now_rfc3339
from eventbus.wire import Arg
from eventbus.worker.describe import MAX_NAME_CHARS, clip, clip_repr

TRACEBACK_TAIL = 2000
# Field pairs of the original entry a dead letter copies at most (Lua's unpack() takes
# about 8,000 values; an entry with more fields must still be dead-lettered).
MAX_COPIED_PAIRS = 512
# Bytes a letter copies beyond the size limit (the envelope's fields).
COPY_ALLOWANCE = 64 * 1024
# The envelope fields copied first when not every field fits.
_ENVELOPE = frozenset(
    {b"id", b"type", b"source", b"time", b"key", b"ct", b"traceparent", b"tracestate", b"pk"}
)


def traceback_tail(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:]
    except Exception:
        return f"{type(exc).__name__} (traceback unavailable)"


def entry_size(fields: list[bytes]) -> tuple[int, int]:
    """(bytes of the `data` field, bytes of every other name and value) of an entry."""
    data = other = 0
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"data":
            data += len(fields[i + 1])
            other += 4
        else:
            other += len(fields[i]) + len(fields[i + 1])
    return data, other


def copied_fields(original: list[bytes], *, max_bytes: int) -> tuple[list[Arg], str]:
    """The original fields a dead letter keeps (so it can be redriven as it was), and a
    note of what it leaves out ("" when nothing): at most MAX_COPIED_PAIRS pairs and
    `max_bytes` in all (plus the envelope allowance), the envelope first. A letter for an
    entry too large to consume is not a second copy of it per group; the original entry
    still has what was left out (and a redrive writes that back)."""
    pairs = [(original[i], original[i + 1]) for i in range(0, len(original) - 1, 2)]
    budget = max_bytes + COPY_ALLOWANCE
    total = sum(len(n) + len(v) for n, v in pairs)
    if len(pairs) <= MAX_COPIED_PAIRS and total <= budget:
        return list(original), ""
    kept: list[Arg] = []
    omitted: list[str] = []
    others = 0
    ordered = sorted(pairs, key=lambda p: p[0] not in _ENVELOPE)  # stable: envelope first
    for name, value in ordered:
        size = len(name) + len(value)
        if size > budget or len(kept) // 2 >= MAX_COPIED_PAIRS:
            if len(omitted) < 10:
                label = clip_repr(name.decode(errors="replace"), 40)
                omitted.append(f"{label} ({len(value):,} bytes)")
            else:
                others += 1
            continue
        budget -= size
        kept += [name, value]
    if others:
        omitted.append(f"{others:,} more fields (of {len(pairs):,})")
    return kept, ", ".join(omitted)


def dlq_fields(
    original: list[bytes],
    *,
    group: str,
    handler: str,
    stream_id: str,
    reason: str,
    error_type: str,
    error: str,
    tb: str,
    attempts: int,
    consumer: str,
    max_field_bytes: int,
) -> list[Arg]:
    """The original fields (bounded, see `copied_fields`) plus ``dlq_*``."""
    fields, omitted = copied_fields(original, max_bytes=max_field_bytes)
    fields += [
        "dlq_group",
        group,
        "dlq_handler",
        handler,
        "dlq_stream_id",
        stream_id,
        "dlq_reason",
        reason,
        "dlq_error_type",
        clip(error_type, MAX_NAME_CHARS),
        "dlq_error",
        clip(error),
        "dlq_traceback",
        tb[-TRACEBACK_TAIL:],
        "dlq_attempts",
        attempts,
        "dlq_consumer",
        consumer,
        "dlq_time",
        now_rfc3339(),
    ]
    if omitted:
        # what was not copied stays in the original entry (dlq_stream_id) until trimmed
        fields += ["dlq_omitted", omitted]
    return fields
