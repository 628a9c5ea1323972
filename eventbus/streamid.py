"""Stream entry ids (``<ms>-<seq>``) as numbers: parsed, compared, stepped, shown."""

from __future__ import annotations

StreamId = tuple[int, int]

# the largest sequence number Redis gives an entry (XADD's seq is a 64-bit unsigned)
MAX_SEQ = 2**64 - 1


def parse_id(value: str | bytes) -> StreamId:
    """``"1700000000000-3"`` as ``(1700000000000, 3)``; a bare ``"<ms>"`` is seq 0."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def ms_of(value: str | bytes) -> int:
    """The millisecond part of an entry id: when the entry was added (Unix ms)."""
    return parse_id(value)[0]


def successor(value: StreamId) -> StreamId:
    """The smallest id after `value` (a group created at a time has seq MAX_SEQ)."""
    if value[1] >= MAX_SEQ:
        return value[0] + 1, 0
    return value[0], value[1] + 1


def predecessor(value: StreamId) -> StreamId:
    """The largest id before `value` (``(0, 0)`` has none: it stays ``(0, 0)``)."""
    ms, seq = value
    if seq:
        return ms, seq - 1
    return (ms - 1, MAX_SEQ) if ms else (0, 0)
