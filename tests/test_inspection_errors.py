"""The inspection API's errors: messages in the API's words (its arguments), which the
command line renders with its flags; and no redis-py error escaping the library."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.exceptions

from eventbus import EventBus, inspection
from eventbus.cli.failures import failure
from eventbus.errors import (
    CommandFailed,
    ConnectionFailed,
    EmbeddedServerError,
    EventBusError,
    Param,
    PermissionDenied,
)
from eventbus.retention import trim_stream
from eventbus.status import stream_info
from eventbus.streams import Stream
from eventbus.testing import RedisServer
from tests.apps.events import Job

pytestmark = pytest.mark.timeout(60)


def api_and_cli(exc: EventBusError) -> tuple[str, str]:
    library, cli = str(exc), failure(exc)
    assert "--" not in library, library
    return library, cli


async def test_a_missing_or_foreign_stream_names_the_prefix(bus: EventBus) -> None:
    with pytest.raises(inspection.NotFound) as missing:
        await inspection.require_stream(bus, "nope")
    library, cli = api_and_cli(missing.value)
    assert library.endswith("check the name, or the bus's prefix")
    assert cli.endswith("check the name, or --prefix")
    await bus.redis.set(bus.keys.stream("odd"), "x")
    with pytest.raises(inspection.WrongType) as foreign:
        await inspection.require_stream(bus, "odd")
    library, cli = api_and_cli(foreign.value)
    assert library.endswith("(redis-cli RENAME/DEL), or use another prefix")
    assert cli.endswith("(redis-cli RENAME/DEL), or use another --prefix")


async def test_refused_repairs_name_the_argument_that_goes_ahead(bus: EventBus) -> None:
    await bus.publish(Job(n=1))
    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "g", id="0")
    await bus.redis.xreadgroup("g", "c1", {key: ">"}, count=1)

    with pytest.raises(inspection.Refused) as beyond:
        await inspection.reset_group(bus, "jobs", "g", "99999999999999-0")
    library, cli = api_and_cli(beyond.value)
    assert "use to='end' to skip to the newest entry" in library
    assert "use --to end to skip to the newest entry" in cli

    with pytest.raises(inspection.Refused) as owning:
        await inspection.delete_consumer(bus, "jobs", "g", "c1")
    library, cli = api_and_cli(owning.value)
    assert "pass claim_to=<another consumer> to hand them over first" in library
    assert "pass --claim-to OTHER to hand them over first" in cli

    with pytest.raises(inspection.Refused) as itself:
        await inspection.delete_consumer(bus, "jobs", "g", "c1", claim_to="c1")
    assert api_and_cli(itself.value)[1] == (
        "--claim-to names the consumer being deleted; choose another"
    )

    with pytest.raises(inspection.Refused) as active:
        await inspection.delete_consumer(bus, "jobs", "g", "c1", claim_to="c2")
    library, cli = api_and_cli(active.value)
    assert library.endswith("stop it first (or pass force=True)")
    assert cli.endswith("stop it first (or pass --force)")

    with pytest.raises(inspection.Refused) as live:
        await inspection.delete_group(bus, "jobs", "g")
    assert api_and_cli(live.value)[1].endswith("stop it first (or pass --force)")


async def test_entries_and_dead_letters_name_the_selection(bus: EventBus) -> None:
    await bus.publish(Job(n=1))
    with pytest.raises(inspection.NotFound) as gone:
        await inspection.get_entry(bus, "jobs", "1-0")
    library, cli = api_and_cli(gone.value)
    assert "; dead_letters() lists dead letters)" in library
    assert "; 'eventbus dlq ls jobs' lists dead letters)" in cli

    await bus.redis.xadd(bus.keys.dlq("jobs"), {"type": "Job", "data": "{}"})
    [letter] = await inspection.dead_letters(bus, "jobs")
    with pytest.raises(inspection.Refused) as groupless:
        await inspection.redrive(bus, "jobs", [letter])
    library, cli = api_and_cli(groupless.value)
    assert library.endswith("(select the others with dead_letters(ids=...))")
    assert cli.endswith("(select the others with --id)")


def test_a_param_the_cli_does_not_know_keeps_the_api_words() -> None:
    exc = EventBusError.naming("set ", Param("unknown", "the thing"), " right")
    assert str(exc) == failure(exc) == "set the thing right"
    embedded = EmbeddedServerError.naming("or pass a URL (", Param("url", "url"), ")")
    assert failure(embedded) == "or pass a URL (--redis-url / EVENTBUS_REDIS_URL)"


async def test_a_server_that_is_gone_raises_connection_failed(
    make_bus: Callable[..., EventBus],
) -> None:
    bus = make_bus("redis://127.0.0.1:1", "gone")
    for call in (inspection.list_streams(bus), inspection.stream_detail(bus, "jobs")):
        with pytest.raises(ConnectionFailed) as info:
            await call
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    with pytest.raises(ConnectionFailed):
        await stream_info(bus.redis, bus.keys, "jobs")


async def test_error_replies_are_eventbus_errors_with_their_cause(bus: EventBus) -> None:
    await bus.redis.set(bus.keys.stream("odd"), "x")
    with pytest.raises(CommandFailed) as info:
        await stream_info(bus.redis, bus.keys, "odd")
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
    assert failure(info.value).startswith("Redis failed the command: WRONGTYPE")
    with pytest.raises(CommandFailed):
        await trim_stream(bus.redis, bus.keys, Stream("odd", retention=1))


async def test_a_missing_permission_is_permission_denied(
    redis_server_factory: Callable[..., RedisServer], make_bus: Callable[..., EventBus]
) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    try:
        admin.xadd("eb:{jobs}", {"type": "Job", "data": "{}"})
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@all", "-xinfo")
    finally:
        admin.close()
    bus = make_bus(f"redis://reader:pw@127.0.0.1:{server.port}/0", "eb")
    with pytest.raises(PermissionDenied) as info:
        await inspection.stream_detail(bus, "jobs")
    assert isinstance(info.value.__cause__, redis.exceptions.NoPermissionError)
    assert f"127.0.0.1:{server.port}: the Redis user 'reader' lacks 'xinfo" in str(info.value)
    assert "ACL SETUSER" in failure(info.value)
