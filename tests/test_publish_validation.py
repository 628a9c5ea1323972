"""Events are validated on the way out: what a handler's strict decoder would refuse is
refused at publish, naming the type and the field, and nothing is written."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
import pytest

from eventbus import Event, EventBus, EventTypeError, SyncPublisher


class OrderPlaced(Event, stream="validated"):
    order_id: str
    total: float = 0.0
    lines: list[int] = msgspec.field(default_factory=list)


class Quantity(Event, stream="validated"):
    n: Annotated[int, msgspec.Meta(ge=0)]  # constraints are checked on decode only


class Audited(Event, stream="validated"):
    """Its __post_init__ refuses on decode what the constructor let through (here, a
    switch flipped after construction: a check depending on state, e.g. a loaded list)."""

    n: int

    def __post_init__(self) -> None:
        if AUDIT["refuse"]:
            raise RuntimeError("audit log unavailable")


AUDIT = {"refuse": False}

BAD = OrderPlaced(order_id=1)  # type: ignore[arg-type]


async def xlen(bus: EventBus) -> int:
    return int(await bus.redis.xlen(bus.keys.stream("validated")))


async def test_publish_refuses_an_ill_typed_field_naming_type_and_field(bus: EventBus) -> None:
    with pytest.raises(EventTypeError) as raised:
        await bus.publish(BAD)
    message = str(raised.value)
    assert "OrderPlaced" in message and "'order_id'" in message
    assert "Expected `str`, got `int`" in message
    with pytest.raises(EventTypeError, match=r"'lines\[0\]'"):
        await bus.publish(OrderPlaced(order_id="o", lines=["x"]))  # type: ignore[list-item]
    assert await xlen(bus) == 0


async def test_publish_many_writes_nothing_when_one_event_is_bad(bus: EventBus) -> None:
    with pytest.raises(EventTypeError, match="order_id"):
        await bus.publish_many([OrderPlaced(order_id="ok"), BAD])
    assert await xlen(bus) == 0


async def test_publish_nowait_refuses_at_the_call(bus: EventBus) -> None:
    with pytest.raises(EventTypeError, match="order_id"):
        bus.publish_nowait(BAD)
    assert bus.buffered == 0
    assert await bus.flush(timeout=5)
    assert await xlen(bus) == 0 and bus.publish_stats.dropped == 0


async def test_the_sync_publisher_refuses_too(
    eventbus_redis_url: str, eventbus_prefix: str, bus: EventBus
) -> None:
    with SyncPublisher.from_url(eventbus_redis_url, service="web", prefix=eventbus_prefix) as pub:
        for call in (pub.publish, pub.publish_nowait, lambda e: pub.publish_many([e])):
            with pytest.raises(EventTypeError, match="order_id"):
                call(BAD)
    assert await xlen(bus) == 0


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_constraints_and_post_init_are_checked_in_either_encoding(
    eventbus_redis_url: str, eventbus_prefix: str, encoding: str
) -> None:
    bus = EventBus.from_url(
        eventbus_redis_url,
        service="v",
        prefix=eventbus_prefix,
        encoding=encoding,  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(EventTypeError, match=r"'n': Expected `int` >= 0"):
            await bus.publish(Quantity(n=-1))
        with pytest.raises(EventTypeError, match="order_id"):
            await bus.publish(BAD)
        event = Audited(n=1)
        AUDIT["refuse"] = True
        try:
            with pytest.raises(EventTypeError, match="RuntimeError: audit log unavailable"):
                await bus.publish(event)
        finally:
            AUDIT["refuse"] = False
        assert await xlen(bus) == 0
        await bus.publish(Quantity(n=0))  # a valid event still goes through
        assert await xlen(bus) == 1
    finally:
        await bus.aclose()


async def test_nan_in_json_is_refused_with_the_reason(bus: EventBus) -> None:
    # msgspec writes NaN and infinity as null in JSON, which a float field refuses
    for value in (math.nan, math.inf):
        with pytest.raises(EventTypeError, match="JSON has no NaN or infinity"):
            await bus.publish(OrderPlaced(order_id="o", total=value))
    assert await xlen(bus) == 0


async def test_msgpack_carries_nan(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    bus = EventBus.from_url(
        eventbus_redis_url, service="v", prefix=eventbus_prefix, encoding="msgpack"
    )
    try:
        await bus.publish(OrderPlaced(order_id="o", total=math.nan))
        assert await xlen(bus) == 1
    finally:
        await bus.aclose()
