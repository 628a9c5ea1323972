"""Redis Cluster's key slots: which of the 16,384 slots a key lives in.

``CRC16(key) mod 16384`` (CRC-16/XMODEM), where a key holding ``{...}`` with at least
one character between the braces hashes only that part: every key of one stream shares
the stream's ``{name}`` tag (eventbus.keys), so they all live in one slot, on one node,
and a script may touch them together.
"""

from __future__ import annotations

SLOTS = 16384


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of `key` that is hashed: the first ``{...}`` with something inside it,
    else the whole key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes | str) -> int:
    """The slot of `key` (str keys are hashed as their UTF-8 bytes)."""
    data = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(data)) % SLOTS
