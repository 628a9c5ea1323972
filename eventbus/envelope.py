"""The stream entry format: CloudEvents attribute names in binary mode.

Fields: ``id type source time key ct data traceparent tracestate target sig``
plus one ``h:<name>`` field per user header. Only ``type`` and ``data`` are
required on the way in, so ``redis-cli XADD eb:{notes} '*' type T data '{}'``
is consumable.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from eventbus.errors import ConfigurationError, DecodeError
from eventbus.events import Event

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
_MSGPACK_ALIASES: Final = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
CONTENT_TYPES: Final = (JSON, *sorted(_MSGPACK_ALIASES))  # every `ct` a consumer accepts
HEADER_PREFIX: Final = "h:"
MAX_HEADERS: Final = 1000
_HEADER_PREFIX_B: Final = HEADER_PREFIX.encode()

Encoding = Literal["json", "msgpack"]

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


class _IdSource:
    """Event ids: a random per-process prefix plus a counter. Cheaper than uuid4
    and unique across processes; the prefix is renewed in forked children."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


_ids = _IdSource()


def new_event_id() -> str:
    return _ids.next()


_second: list[tuple[int, str]] = [(-1, "")]


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds (the seconds part is cached:
    formatting a datetime per event costs more than the rest of the envelope)."""
    whole, ns = divmod(time.time_ns(), 1_000_000_000)
    cached, text = _second[0]
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second[0] = (whole, text)
    return f"{text}.{ns // 1000:06d}Z"


def encode_payload(event: Event, encoding: Encoding) -> bytes:
    if encoding == "json":
        return _json_encoder.encode(event)
    return _msgpack_encoder.encode(event)


def content_type(encoding: Encoding) -> str | None:
    """The ``ct`` field for an encoding; None (field omitted) for JSON."""
    if encoding == "json":
        return None
    if encoding == "msgpack":
        return MSGPACK
    raise ConfigurationError(f"unknown encoding {encoding!r}: use 'json' or 'msgpack'")


def field_list(
    *,
    type_name: str,
    data: bytes,
    source: str,
    ct: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    target: str | None = None,
    event_id: str | None = None,
) -> list[str | bytes]:
    """One stream entry's fields as the flat ``[name, value, ...]`` XADD takes."""
    fields: list[str | bytes] = [
        "id",
        event_id or new_event_id(),
        "type",
        type_name,
        "source",
        source,
        "time",
        now_rfc3339(),
    ]
    if key is not None:
        fields += ("key", key)
    if ct is not None:
        fields += ("ct", ct)
    fields += ("data", data)
    if traceparent is not None:
        fields += ("traceparent", traceparent)
        if tracestate:
            fields += ("tracestate", tracestate)
    if target is not None:
        fields += ("target", target)
    if headers:
        for name, value in headers.items():
            fields += (HEADER_PREFIX + name, value)
    return fields


def build_fields(**attributes: Any) -> dict[str, str | bytes]:
    """The field map of one stream entry (`field_list` as a dict, in on-disk order)."""
    flat = field_list(**attributes)
    return dict(zip(flat[::2], flat[1::2], strict=True))  # type: ignore[arg-type]


def check_headers(headers: dict[str, str] | None) -> None:
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise ConfigurationError(f"headers must be a dict of str to str, got {headers!r}")
    if len(headers) > MAX_HEADERS:
        raise ConfigurationError(
            f"{len(headers):,} headers: at most {MAX_HEADERS:,} fit an event (each is a field "
            "of the stream entry, written by a script); put the rest in the payload"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise ConfigurationError(
                f"header {name!r}: names and values must be non-empty str / str"
            )


class Envelope(msgspec.Struct, frozen=True):
    """A decoded stream entry, payload still encoded."""

    stream_id: str
    type: str
    data: bytes
    id: str | None = None
    source: str | None = None
    time: str | None = None
    key: str | None = None
    ct: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    target: str | None = None
    sig: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def is_msgpack(self) -> bool:
        return self.ct is not None and self.ct in _MSGPACK_ALIASES


_TEXT_FIELDS: Final = {
    name.encode(): name
    for name in (
        "id",
        "type",
        "source",
        "time",
        "key",
        "ct",
        "traceparent",
        "tracestate",
        "target",
        "sig",
    )
}


def parse_fields(stream_id: str, fields: Sequence[bytes] | Mapping[bytes, bytes]) -> Envelope:
    """Parse an entry's fields (the flat ``[name, value, ...]`` list Redis returns, or a
    mapping); raises DecodeError naming what is missing or wrong."""
    if isinstance(fields, Mapping):
        fields = [item for pair in fields.items() for item in pair]
    attrs: dict[str, Any] = {}
    headers: dict[str, str] = {}
    data: bytes | None = None
    pairs = iter(fields)
    try:
        for raw_name, raw_value in zip(pairs, pairs, strict=True):
            if raw_name == b"data":
                data = raw_value
                continue
            name = _TEXT_FIELDS.get(raw_name)
            if name is not None:
                attrs[name] = raw_value.decode()
            elif raw_name.startswith(_HEADER_PREFIX_B):
                headers[raw_name[len(_HEADER_PREFIX_B) :].decode()] = raw_value.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"entry {stream_id}: a text field is not UTF-8 ({exc})") from None
    except ValueError:
        raise DecodeError(f"entry {stream_id}: odd number of field names and values") from None
    return Envelope(
        stream_id=stream_id, data=_check_required(stream_id, attrs, data), headers=headers, **attrs
    )


def _check_required(stream_id: str, attrs: dict[str, Any], data: bytes | None) -> bytes:
    if not attrs.get("type"):
        raise DecodeError(f"entry {stream_id} has no 'type' field")
    if data is None:
        raise DecodeError(f"entry {stream_id} has no 'data' field")
    ct = attrs.get("ct")
    if ct is not None and ct != JSON and ct not in _MSGPACK_ALIASES:
        raise DecodeError(f"entry {stream_id}: unsupported content type {ct!r}")
    return data


class PayloadDecoders:
    """Cached strict decoders per event class (one reused Decoder per type and format)."""

    def __init__(self) -> None:
        self._json: dict[type[Event], msgspec.json.Decoder[Any]] = {}
        self._msgpack: dict[type[Event], msgspec.msgpack.Decoder[Any]] = {}

    def decode(self, envelope: Envelope, cls: type[Event]) -> Event:
        try:
            if envelope.is_msgpack:
                mdec = self._msgpack.get(cls)
                if mdec is None:
                    mdec = self._msgpack[cls] = msgspec.msgpack.Decoder(cls)
                event: Event = mdec.decode(envelope.data)
            else:
                jdec = self._json.get(cls)
                if jdec is None:
                    jdec = self._json[cls] = msgspec.json.Decoder(cls)
                event = jdec.decode(envelope.data)
        except msgspec.DecodeError as exc:
            raise DecodeError(
                f"entry {envelope.stream_id}: payload does not decode as {cls.__name__}: {exc}"
            ) from None
        return event
