"""An app's AsyncAPI 3.0.0 document, built from its Router alone (no Redis needed).

    from eventbus.asyncapi import asyncapi_document

    doc = asyncapi_document(router, "notes-api", version="1.4.0")

- a channel per stream the app reads or its schedules publish to; its address is the
  stream's Redis key (``<prefix>:{<stream>}``), its messages every event type the app's
  handlers take on it, its schedules publish to it, or that is declared for it;
- a ``receive`` operation per handler and stream, named after the consumer group the
  worker creates (``<service>.<handler>``), with its delivery options in ``x-eventbus``;
- a ``send`` operation per schedule and stream, when what it publishes is known: the
  event of a ``schedule_event``, or the function's return annotation;
- messages whose ``headers`` are the envelope's CloudEvents attributes and whose
  ``payload`` is the event's JSON Schema (``msgspec.json.schema_components``).

The same app always gives the same document (sorted where order carries no meaning), so
it can be committed and diffed in CI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from eventbus.envelope import CONTENT_TYPES, HEADER_PREFIX, JSON
from eventbus.errors import ConfigurationError
from eventbus.events import Event, event_type_name, registered, stream_of
from eventbus.handlers import HandlerSpec
from eventbus.keys import DEFAULT_PREFIX, Keys, check_name
from eventbus.router import Router
from eventbus.schedules.spec import ScheduleSpec, emitted_types
from eventbus.streams import StreamSettings

ASYNCAPI_VERSION = "3.0.0"
ENVELOPE_SCHEMA = "eventbus.Envelope"
EVENT_ID = "eventbus.eventId"

_SCHEMAS = "#/components/schemas/"


def asyncapi_document(
    router: Router,
    service: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    version: str = "0.0.0",
    description: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of `router` run as `service` under key `prefix`, as
    plain JSON-compatible data. Raises ConfigurationError for a bad service or prefix."""
    check_name("service", service)
    keys = Keys(prefix)
    streams = app_streams(router)
    schema_names, schemas = _payload_schemas(streams)
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(service, version, description),
        "defaultContentType": JSON,
        "channels": {
            stream: _channel(keys, stream, types) for stream, types in sorted(streams.items())
        },
        "operations": _operations(router, service),
        "components": {
            "schemas": dict(sorted({**schemas, ENVELOPE_SCHEMA: envelope_schema()}.items())),
            "messages": _messages(router, streams, schema_names),
            "correlationIds": {EVENT_ID: _event_id()},
        },
        "x-eventbus": {"prefix": prefix, "service": service},
    }
    return doc


def app_streams(router: Router) -> dict[str, dict[str, type[Event]]]:
    """stream -> type name -> class, for every stream the app's handlers read or its
    schedules publish to: the types handled or published, and those declared for it."""
    streams: dict[str, dict[str, type[Event]]] = {}
    for handler in router.handlers:
        for stream, types in handler.types.items():
            streams.setdefault(stream, {}).update(types)
    for schedule in router.schedules:
        for cls in emitted_types(schedule) or ():
            target = stream_of(cls)
            assert target is not None  # emitted_types only returns classes with a stream
            streams.setdefault(target, {})[event_type_name(cls)] = cls
    for stream, types in streams.items():
        for name, cls in registered(stream).items():
            types.setdefault(name, cls)
    return {stream: dict(sorted(types.items())) for stream, types in streams.items()}


def message_id(stream: str, type_name: str) -> str:
    """A message's key in components.messages: ``<stream>.<type>`` (type names are unique
    per stream only), with characters AsyncAPI keys do not allow replaced by ``_``."""
    return f"{stream}.{_key(type_name)}"


def _key(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)


def _info(service: str, version: str, description: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"title": service, "version": version}
    info["description"] = description or (
        f"Events of the service {service!r} on Redis Streams (eventbus). Every handler "
        "reads through its own consumer group; delivery is at-least-once, with retries "
        "and a dead-letter stream per stream."
    )
    return info


def envelope_schema() -> dict[str, Any]:
    """The fields of a stream entry besides ``data``: CloudEvents attributes, binary mode."""

    def text(description: str, **extra: Any) -> dict[str, Any]:
        return {"type": "string", "description": description, **extra}

    return {
        "title": "eventbus envelope",
        "description": "The fields of a stream entry besides `data` (which holds the "
        "payload): CloudEvents attribute names in binary mode. Only `type` and `data` are "
        "required, so an entry written with `redis-cli XADD` is consumable.",
        "type": "object",
        "properties": {
            "id": text("CloudEvents id: unique per event, kept across retries"),
            "type": text("CloudEvents type: the event type name"),
            "source": text("CloudEvents source: the publishing service"),
            "time": text(
                "CloudEvents time: when it was published, RFC 3339 UTC", format="date-time"
            ),
            "key": text(
                "the publisher's idempotency / partition key (optional); "
                "idempotent handlers deduplicate on it"
            ),
            "ct": text(
                "content type of `data`; absent means application/json (eventbus writes "
                'application/msgpack for a bus with encoding="msgpack")',
                enum=list(CONTENT_TYPES),
                default=JSON,
            ),
            "traceparent": text(
                "W3C trace context (optional)",
                pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            ),
            "tracestate": text("W3C trace state (optional)"),
            "target": text(
                "on a redelivery from the dead-letter stream: the only consumer "
                "group that handles it; the others acknowledge it"
            ),
            "sig": text("HMAC signature (optional)"),
        },
        "patternProperties": {
            f"^{HEADER_PREFIX}.+$": text("a header passed to publish(headers=...)"),
        },
        "required": ["type"],
    }


def _event_id() -> dict[str, Any]:
    return {
        "description": "The CloudEvents id of the event; trace context travels in `traceparent`.",
        "location": "$message.header#/id",
    }


def _channel(keys: Keys, stream: str, types: Mapping[str, type[Event]]) -> dict[str, Any]:
    settings = StreamSettings().get(stream)
    extension: dict[str, Any] = {"stream": stream, "dlq": keys.dlq(stream)}
    if settings.maxlen is not None:
        extension["maxlen"] = settings.maxlen
    if settings.retention_s is not None:
        extension["retention_s"] = settings.retention_s
    return {
        "address": keys.stream(stream),
        "title": stream,
        "description": f"Redis stream `{keys.stream(stream)}`; entries that exhaust their "
        f"attempts go to `{keys.dlq(stream)}`.",
        "messages": {
            _key(name): {"$ref": f"#/components/messages/{message_id(stream, name)}"}
            for name in types
        },
        "x-eventbus": extension,
    }


@dataclass(frozen=True, slots=True)
class _Operation:
    key: str
    body: dict[str, Any]


def _operations(router: Router, service: str) -> dict[str, Any]:
    """Receive operations of the handlers, then send operations of the schedules, each
    sorted by key; a key already taken gets a numeric suffix."""
    receives = sorted(
        (op for h in router.handlers for op in _receives(h, service)), key=lambda o: o.key
    )
    sends = sorted((op for s in router.schedules for op in _sends(s)), key=lambda o: o.key)
    operations: dict[str, Any] = {}
    for op in [*receives, *sends]:
        key, n = op.key, 1
        while key in operations:
            n += 1
            key = f"{op.key}-{n}"
        operations[key] = op.body
    return operations


def _message_refs(stream: str, names: Iterable[str]) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{stream}/messages/{_key(n)}"} for n in sorted(names)]


def _receives(handler: HandlerSpec, service: str) -> list[_Operation]:
    group = handler.group(service)
    ops = []
    for stream in handler.streams:
        body: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{stream}"},
            "title": group,
        }
        about = _about(handler.fn)
        if about:
            body["description"] = about
        body["messages"] = _message_refs(stream, handler.types[stream])
        body["x-eventbus"] = {
            "group": group,
            "handler": handler.name,
            "concurrency": handler.concurrency,
            "max_attempts": handler.max_attempts,
            "lease_s": handler.lease_s,
            "timeout_s": handler.timeout_s,
            "idempotent": handler.idempotency is not None,
            "start_from": _start_from(handler.start_from),
        }
        key = group if len(handler.types) == 1 else f"{group}.{stream}"
        ops.append(_Operation(key, body))
    return ops


def _start_from(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _sends(schedule: ScheduleSpec) -> list[_Operation]:
    by_stream: dict[str, list[str]] = {}
    for cls in emitted_types(schedule) or ():
        by_stream.setdefault(stream_of(cls) or "", []).append(event_type_name(cls))
    ops = []
    for stream, names in sorted(by_stream.items()):
        body: dict[str, Any] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{stream}"},
            "title": f"schedule {schedule.name}",
        }
        about = _about(schedule.fn) if schedule.event is None else None
        body["description"] = (
            (f"{about}\n\n" if about else "")
            + f"Published on every tick of `{schedule.spec}` ({schedule.tz_name}), once per "
            f"tick however many scheduler replicas run (idempotency key "
            f"`sched:{schedule.name}:<tick>`)."
        )
        body["messages"] = _message_refs(stream, names)
        body["x-eventbus"] = {
            "schedule": schedule.name,
            "spec": schedule.spec,
            "tz": schedule.tz_name,
            "misfire": schedule.misfire,
            "known_from": "schedule_event" if schedule.event is not None else "annotation",
        }
        key = f"schedule.{schedule.name}"
        ops.append(_Operation(key if len(by_stream) == 1 else f"{key}.{stream}", body))
    return ops


def _about(obj: Callable[..., Any]) -> str | None:
    """The first paragraph of `obj`'s own docstring, on one line."""
    doc = inspect.cleandoc(obj.__doc__) if obj.__doc__ else None
    return doc.split("\n\n", 1)[0].replace("\n", " ") if doc else None


def _payload_schemas(
    streams: Mapping[str, Mapping[str, type[Event]]],
) -> tuple[dict[type[Event], dict[str, Any]], dict[str, Any]]:
    """Each event class's payload schema (a $ref) and the shared component schemas."""
    classes = sorted(
        {cls for types in streams.values() for cls in types.values()},
        key=lambda cls: (cls.__module__, cls.__qualname__),
    )
    try:
        refs, components = msgspec.json.schema_components(classes, ref_template=_SCHEMAS + "{name}")
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigurationError(
            f"cannot describe the event classes as JSON Schema: {exc}"
        ) from None
    if ENVELOPE_SCHEMA in components:  # the user has a class of that full name
        raise ConfigurationError(f"an event schema is named {ENVELOPE_SCHEMA!r}, reserved")
    return dict(zip(classes, refs, strict=True)), components


def _messages(
    router: Router,
    streams: Mapping[str, Mapping[str, type[Event]]],
    payloads: Mapping[type[Event], dict[str, Any]],
) -> dict[str, Any]:
    examples = _fixed_events(router)
    messages: dict[str, dict[str, Any]] = {}
    for stream, types in sorted(streams.items()):
        for name, cls in types.items():
            message: dict[str, Any] = {
                "name": name,
                "title": cls.__name__,
            }
            about = _about(cls)
            if about:
                message["description"] = about
            message["contentType"] = JSON
            message["correlationId"] = {"$ref": f"#/components/correlationIds/{EVENT_ID}"}
            message["headers"] = {
                "type": "object",
                "allOf": [
                    {"$ref": _SCHEMAS + ENVELOPE_SCHEMA},
                    {"properties": {"type": {"const": name}}},
                ],
            }
            message["payload"] = payloads[cls]
            if cls in examples:
                message["examples"] = examples[cls]
            message["x-eventbus"] = {
                "stream": stream,
                "type": name,
                "class": f"{cls.__module__}.{cls.__qualname__}",
            }
            key = message_id(stream, name)
            if key in messages:
                raise ConfigurationError(
                    f"stream {stream!r}: event types {name!r} and "
                    f"{messages[key]['name']!r} both map to the AsyncAPI key {key!r}"
                )
            messages[key] = message
    return messages


def _fixed_events(router: Router) -> dict[type[Event], list[dict[str, Any]]]:
    """The events of `schedule_event` schedules, as message examples."""
    examples: dict[type[Event], list[dict[str, Any]]] = {}
    for schedule in sorted(router.schedules, key=lambda s: s.name):
        if schedule.event is not None:
            examples.setdefault(type(schedule.event), []).append(
                {
                    "name": _key(f"schedule-{schedule.name}"),
                    "summary": f"published by the schedule {schedule.name!r}",
                    "payload": msgspec.to_builtins(schedule.event),
                }
            )
    return examples
