"""One stream entry, decoded as far as it goes and bounded for display: a hostile entry
(a 20 MB field, thousands of fields, nesting 100k deep) shows what it is, clipped."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from eventbus.envelope import Envelope, parse_fields
from eventbus.errors import DecodeError
from eventbus.inspection.common import Fields
from eventbus.streamid import ms_of
from eventbus.text import as_text

# what the inspection commands decode and show of one entry: enough for any real event,
# bounded for a hostile one (a 20 MB field, thousands of fields, nesting 100k deep)
TEXT_LIMIT = 64 * 1024  # characters of a field's value (the rest is clipped, its size said)
PAYLOAD_LIMIT = 1024 * 1024  # bytes of payload decoded (the bus's default max_event_bytes)
FIELDS_LIMIT = 200  # fields listed of an entry that is not an envelope
DEPTH_LIMIT = 100  # levels of nesting of a payload shown


@dataclass(frozen=True, slots=True)
class Entry:
    """A stream entry, decoded as far as it goes: `envelope` and `payload` when it parses,
    `error` (why not) otherwise; `fields` always (text; bytes that are not UTF-8 shown as
    a repr; values over TEXT_LIMIT clipped; at most FIELDS_LIMIT, `fields_omitted` the
    rest). Everything is text as stored: escape it before it reaches a terminal."""

    id: str
    fields: Fields
    envelope: Envelope | None
    payload: Any
    error: str | None
    fields_omitted: int = 0

    @property
    def type(self) -> str | None:
        return self.envelope.type if self.envelope else self.fields.get("type")

    @property
    def key(self) -> str | None:
        return self.envelope.key if self.envelope else self.fields.get("key")

    def as_json(self) -> dict[str, Any]:
        env = self.envelope
        out: dict[str, Any] = {"id": self.id, "time": _iso_of(self.id)}
        if env is not None:
            out["envelope"] = {
                k: v
                for k, v in (
                    ("id", env.id),
                    ("type", env.type),
                    ("source", env.source),
                    ("time", env.time),
                    ("key", env.key),
                    ("ct", env.ct),
                    ("traceparent", env.traceparent),
                    ("tracestate", env.tracestate),
                    ("target", env.target),
                    ("headers", env.headers or None),
                )
                if v is not None
            }
            out["payload"] = self.payload
        if env is None or self.error:  # what it holds, when that is all there is to show
            out["fields"] = self.fields
        if self.fields_omitted:
            out["fields_omitted"] = self.fields_omitted
        if self.error:
            out["error"] = self.error
        return out


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _iso_of(entry_id: str) -> str | None:
    """The time of a stream id; None for an id that is not one (a dead letter's
    dlq_stream_id holding junk)."""
    try:
        return _iso_ms(ms_of(entry_id))
    except (ValueError, OverflowError, OSError):
        return None


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [clipped: {len(text):,} characters in all]"


def field_text(value: Any, limit: int = TEXT_LIMIT) -> Any:
    """A field's value as text: UTF-8 decoded, else a repr; clipped to `limit` bytes."""
    if not isinstance(value, bytes | bytearray):
        return value
    size = len(value)
    head = bytes(value[:limit])
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        cut_mid_character = size > limit and exc.start > limit - 4
        text = head[: exc.start].decode() if cut_mid_character else repr(head)
    if size > limit:
        return f"{text}… [clipped: {size:,} bytes in all]"
    return text


def pairs_of(raw: Any) -> list[tuple[Any, Any]]:
    """An entry's (name, value) pairs, from redis-py's dict or a flat list (an odd last
    name, which Redis never stores, is dropped rather than failing)."""
    if isinstance(raw, dict):
        return list(raw.items())
    return list(zip(raw[::2], raw[1::2], strict=False))


def _display_fields(pairs: list[tuple[Any, Any]]) -> tuple[Fields, int]:
    shown = pairs[:FIELDS_LIMIT]
    fields = {clip(as_text(k), 1024): field_text(v) for k, v in shown}
    return fields, len(pairs) - len(shown)


def decode_entry(entry_id: Any, raw: Any) -> Entry:
    """Decode one XRANGE/XREAD entry; never raises for what the entry holds."""
    sid = as_text(entry_id)
    pairs = pairs_of(raw)
    fields, omitted = _display_fields(pairs)
    # the envelope is parsed from clipped text fields (a 20 MB type is shown clipped)
    # and the payload as stored (its size is checked before decoding)
    clipped: dict[Any, Any] = {}
    for name, value in pairs:
        small = name == b"data" or not isinstance(value, bytes) or len(value) <= TEXT_LIMIT
        clipped[name] = value if small else _clip_bytes(value)
    try:
        envelope = parse_fields(sid, clipped)
    except DecodeError as exc:
        return Entry(sid, fields, None, None, clip(str(exc), 1024), omitted)
    payload, error = _payload(envelope)
    return Entry(sid, fields, envelope, payload, error, omitted)


def _clip_bytes(value: bytes) -> bytes:
    head = value[:TEXT_LIMIT].decode(errors="ignore")
    return f"{head}… [clipped: {len(value):,} bytes in all]".encode()


def _payload(envelope: Envelope) -> tuple[Any, str | None]:
    """The decoded payload, JSON-ready, or None and why it is not shown."""
    size = len(envelope.data)
    if size > PAYLOAD_LIMIT:
        return None, (
            f"payload of {size:,} bytes is larger than the {PAYLOAD_LIMIT:,} the inspection "
            "commands decode (its first bytes are in the fields)"
        )
    try:
        if envelope.is_msgpack:
            value = msgspec.msgpack.decode(envelope.data)
        else:
            value = msgspec.json.decode(envelope.data)
    except msgspec.DecodeError as exc:
        return None, clip(f"payload does not decode: {exc}", 1024)
    except RecursionError:
        return None, "payload does not decode: it nests too deeply for the decoder"
    if _deeper_than(value, DEPTH_LIMIT):
        return None, f"payload nests deeper than {DEPTH_LIMIT} levels; not shown"
    return jsonable(value), None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/maps nest in `value` more than `limit` levels (iteratively: a
    recursive walk is what would overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def jsonable(value: Any) -> Any:
    """`value` with what JSON cannot hold (bytes, as msgpack may carry, also as map
    keys; non-string keys) turned into text."""
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return field_text(bytes(value))
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes | bytearray):
        return str(field_text(bytes(key)))
    return str(key)


def decode_pair(pair: Any) -> Entry:
    """An (id, fields) pair of XRANGE/XREAD, decoded."""
    return decode_entry(pair[0], pair[1])
