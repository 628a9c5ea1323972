"""Events and the envelope: typed, bound to streams, CloudEvents field names."""

from __future__ import annotations

import msgspec
import pytest

from eventbus import ConfigurationError, Event, EventBus
from eventbus.envelope import PayloadDecoders, build_fields, parse_fields
from eventbus.errors import DecodeError, EventTypeError
from eventbus.events import lookup
from tests.apps.events import Job


class Renamed(Event, stream="misc", type="misc.renamed.v1"):
    value: int


class Base(Event, stream="inherit"):
    a: int


class Child(Base):
    b: int = 0


class NoStream(Event):
    x: int


def test_event_binds_stream_and_type() -> None:
    assert Job.__eb_stream__ == "jobs"
    assert Job.__eb_type__ == "Job"
    assert Renamed.__eb_type__ == "misc.renamed.v1"
    assert Child.__eb_stream__ == "inherit"
    assert lookup("misc", "misc.renamed.v1") is Renamed
    assert lookup("inherit", "Child") is Child
    assert lookup("misc", "Nope") is None


def test_events_are_frozen_structs() -> None:
    job = Job(n=1)
    with pytest.raises(AttributeError):
        job.n = 2  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(job), type=Job) == job


def test_two_classes_claiming_one_type_on_a_stream_fail() -> None:
    with pytest.raises(ConfigurationError, match="declared twice"):

        class Job(Event, stream="jobs"):  # same type name as tests.apps.events.Job
            n: int


def test_bad_stream_name_fails_at_class_creation() -> None:
    with pytest.raises(ConfigurationError, match="invalid stream name"):

        class Bad(Event, stream="has space"):
            x: int


def test_envelope_fields_use_cloudevents_names() -> None:
    fields = build_fields(
        type_name="Job",
        data=b'{"n":1}',
        source="svc",
        key="k1",
        headers={"tenant": "acme"},
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert list(fields)[:4] == ["id", "type", "source", "time"]
    assert fields["key"] == "k1"
    assert fields["h:tenant"] == "acme"
    assert "ct" not in fields  # JSON is the default content type
    assert str(fields["time"]).endswith("Z")


def test_minimal_entry_parses() -> None:
    env = parse_fields("1-0", {b"type": b"Job", b"data": b'{"n": 5}'})
    assert env.type == "Job" and env.id is None and env.headers == {}
    assert PayloadDecoders().decode(env, Job) == Job(n=5)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({b"data": b"{}"}, "no 'type' field"),
        ({b"type": b"Job"}, "no 'data' field"),
        ({b"type": b"Job", b"data": b"{}", b"ct": b"text/xml"}, "unsupported content type"),
        ({b"type": b"\xff", b"data": b"{}"}, "not UTF-8"),
    ],
)
def test_malformed_entries_name_the_problem(fields: dict[bytes, bytes], problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        parse_fields("1-0", fields)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "does not decode as Job"),
        (b'{"n": "five"}', "Expected `int`"),
        (b'{"payload": "x"}', "missing required field `n`"),
    ],
)
def test_strict_payload_decoding(data: bytes, problem: str) -> None:
    env = parse_fields("1-0", {b"type": b"Job", b"data": data})
    with pytest.raises(DecodeError, match=problem):
        PayloadDecoders().decode(env, Job)


async def test_publish_rejects_what_is_not_an_event(bus: EventBus) -> None:
    with pytest.raises(EventTypeError, match="only instances of Event subclasses"):
        await bus.publish({"n": 1})  # type: ignore[arg-type]
    with pytest.raises(EventTypeError, match="has no stream"):
        await bus.publish(NoStream(x=1))
    with pytest.raises(ConfigurationError, match="header 'a'"):
        await bus.publish(Job(n=1), headers={"a": 1})  # type: ignore[dict-item]
    assert await bus.redis.exists(bus.keys.stream("jobs")) == 0


async def test_msgpack_encoding_round_trips(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    bus = EventBus.from_url(
        eventbus_redis_url, service="mp", prefix=eventbus_prefix, encoding="msgpack"
    )
    try:
        stream_id = await bus.publish(Job(n=7, payload="x"))
        [(_, fields)] = await bus.redis.xrange(bus.keys.stream("jobs"))
        assert fields[b"ct"] == b"application/msgpack"
        env = parse_fields(stream_id, fields)
        assert PayloadDecoders().decode(env, Job) == Job(n=7, payload="x")
    finally:
        await bus.aclose()
