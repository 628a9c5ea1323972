"""What the commands print: text escaped for a terminal, tables, colour, JSON, ages and
sizes."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from eventbus.streamid import ms_of

# -- escaping: nothing read from Redis reaches a terminal raw ---------------------------

# control characters (C0, DEL, C1: ANSI escapes start with ESC or CSI), the bidi and
# line/paragraph separator controls (text shown out of order), lone surrogates
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, lines: bool = False) -> str:
    """`text` with every control character escaped (``\\x1b``, ``\\u202e``); with
    `lines`, newlines are kept (a traceback)."""
    value = str(text)
    if lines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in value.split("\n"))
    return _UNSAFE.sub(_escape, value)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON, readable (not ASCII-only) but with the characters a terminal
    would act on escaped: json escapes C0 controls, this also DEL, C1, bidi controls and
    lone surrogates (still valid JSON, the same strings once parsed)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


# -- rendering --------------------------------------------------------------------------


def use_colour(out: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(out, "isatty", lambda: False)())


_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}


def paint(text: str, colour: str | None, enabled: bool) -> str:
    if not enabled or not colour:
        return text
    return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"


Cell = str | tuple[str, str | None]  # text, or (text, colour)


CELL_WIDTH = 120  # a longer value (a name someone made 2 MB long) is clipped in a table


def _cell(text: str) -> str:
    text = safe(text)
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    out: TextIO,
    *,
    colour: bool = False,
    right: Sequence[int] = (),
) -> None:
    """Aligned columns; `right` are the indexes of numeric (right-aligned) columns."""
    plain = [[_cell(c if isinstance(c, str) else c[0]) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in plain:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    head = "  ".join(
        (h.rjust(w) if i in right else h.ljust(w))
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out.write(paint(head.rstrip(), "bold", colour) + "\n")
    for row, raw in zip(plain, rows, strict=True):
        cells = []
        for i, (text, w) in enumerate(zip(row, widths, strict=True)):
            padded = text.rjust(w) if i in right else text.ljust(w)
            raw_cell = raw[i]
            cells.append(paint(padded, None if isinstance(raw_cell, str) else raw_cell[1], colour))
        out.write("  ".join(cells).rstrip() + "\n")


def dump_json(value: Any, out: TextIO) -> None:
    out.write(json_text(value, indent=2) + "\n")


def ago(seconds: float | None) -> str:
    """``4s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if seconds < 10 and seconds != int(seconds):
        return f"{max(0.0, seconds):.1f}s"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age_of_id(entry_id: str | None, now: float | None = None) -> float | None:
    if not entry_id:
        return None
    now = time.time() if now is None else now
    return max(0.0, now - ms_of(entry_id) / 1000)


def iso_of_id(entry_id: str | None) -> str | None:
    """The time of a stream id; None for None or what is not an id."""
    if not entry_id:
        return None
    try:
        when = datetime.fromtimestamp(ms_of(entry_id) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def stdout() -> TextIO:
    return sys.stdout
