"""The hand-packed protocol layer."""

from __future__ import annotations

import pytest

from eventbus import EventBus
from eventbus.wire import pack
from eventbus.wire.packing import _pack_hiredis, _pack_python

ARGS = [
    ["PING"],
    ["XADD", "eb:{s}", "*", "type", "T", "data", b'{"a":1}'],
    ["SET", "k", b"\x00\xff\r\n binary", "EX", 10],
    ["X", "", b"", "üñíçødé", 0, -5, 2.5, 10**20],
]


@pytest.mark.parametrize("args", ARGS)
def test_python_and_hiredis_packers_agree(args: list[object]) -> None:
    assert _pack_python(args) == _pack_hiredis(args)  # type: ignore[arg-type]


async def test_packed_commands_round_trip(bus: EventBus) -> None:
    wire = bus.wire
    key = f"{bus.keys.prefix}:wire"
    value = b"\x00\xff\r\n binary \xc3\xa9"
    assert await wire.call("SET", key, value) == b"OK"
    replies = await wire.request(pack(["GET", key]) + pack(["INCR", key]) + pack(["TYPE", key]), 3)
    assert replies[0] == value
    assert "not an integer" in str(replies[1])  # an error reply, the others still read
    assert replies[2] == b"string"
