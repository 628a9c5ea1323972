"""Values read from Redis as text: bytes that are not UTF-8 never fail a read or a scrape."""

from __future__ import annotations


def as_text(value: object, *, errors: str = "replace") -> str:
    """`value` as ``str``: bytes decoded as UTF-8 (invalid bytes handled by `errors`, by
    default replaced with U+FFFD; ``"backslashreplace"`` keeps them visible as ``\\xff``),
    anything else through ``str``."""
    return value.decode(errors=errors) if isinstance(value, bytes) else str(value)
