"""Hardening of the operator CLI: error messages with their cause (cluster nodes, ACL
permissions, passwords), unambiguous dead-letter selection, deleting an abandoned group,
options given as --name=value, publish checked against an app's event class."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
from collections.abc import Callable

import pytest
import redis

from eventbus import EventBus
from eventbus.cli import main as cli_main
from eventbus.cli.main import build_parser
from eventbus.errors import describe_error
from eventbus.retention import trim_stream
from eventbus.streams import Stream
from eventbus.testing import RedisServer, wait_for
from eventbus.testing.server import free_port
from tests.apps.events import Job
from tests.helpers import run_cli

pytestmark = pytest.mark.timeout(60)


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*argv, drop=("EVENTBUS_",), stdin=stdin)


def one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


async def cli(bus: EventBus, url: str, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args([*argv, "--redis-url", url, "--prefix", bus.keys.prefix])
    out = io.StringIO()
    code = await args.handler(args, out)
    return code, out.getvalue()


# -- error messages -------------------------------------------------------------------


def test_describe_error_is_never_empty() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(redis.ConnectionError("")) == "ConnectionError"
    assert describe_error(ValueError("bad value")) == "bad value"
    assert describe_error(Broken()) == "Broken"


def test_an_exception_without_a_message_still_says_what_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def raises(args: argparse.Namespace) -> int:
        raise redis.TimeoutError()

    monkeypatch.setattr(cli_main, "_command", lambda name, args: raises)
    assert cli_main.main(["streams", "--redis-url", "redis://127.0.0.1:1"]) == 2
    message = capsys.readouterr().err.strip()
    assert message == "eventbus: error: Redis failed the command: TimeoutError"


def test_exceptions_in_commands_carry_no_uvloop_import_error() -> None:
    """asyncio ran inside the `except ImportError` of the uvloop import, so every exception
    (and every dead letter's traceback) started with "No module named 'uvloop'"."""
    caught: list[BaseException] = []

    async def command(args: argparse.Namespace) -> int:
        async def handler() -> None:
            raise ValueError("handler failed")

        try:
            await asyncio.create_task(handler())
        except ValueError as exc:
            caught.append(exc)
        raise KeyError("command failed")

    with pytest.raises(KeyError) as info:
        cli_main._run_async(command, argparse.Namespace())
    assert info.value.__context__ is None
    assert caught and caught[0].__context__ is None


def test_demo_log_level_with_equals_is_honoured(
    eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    result = run(
        "demo",
        "--events",
        "5",
        "--redis-url",
        eventbus_redis_url,
        "--prefix",
        eventbus_prefix,
        "--log-level=DEBUG",
        "--timeout",
        "30",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DEBUG   asyncio" in result.stderr, result.stderr[-2000:]
    assert "INFO    eventbus.worker: worker" in result.stderr  # not silenced
    assert cli_main._given(["--log-lev=DEBUG"], "--log-level")
    assert cli_main._given(["--log-level", "DEBUG"], "--log-level")
    assert not cli_main._given(["--", "--log-level=DEBUG"], "--log-level")
    assert not cli_main._given(["--logs"], "--log-level")


def cluster_args(bus_port: int | None = None) -> list[str]:
    # the bus port is given: the default (port + 10000) fails for a free port above 55535
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        str(bus_port or free_port()),
    ]


@pytest.fixture
def cluster_nodes(redis_server_factory: Callable[..., RedisServer]) -> tuple[RedisServer, int]:
    """Two cluster nodes, each serving half the slots; returns the first and a slot the
    second serves. Also good: a third node serving none (CLUSTERDOWN)."""
    a = redis_server_factory(extra_args=cluster_args())
    b_bus = free_port()
    b = redis_server_factory(extra_args=cluster_args(b_bus))
    ra, rb = redis.Redis(port=a.port), redis.Redis(port=b.port)
    try:
        ra.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
        rb.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
        ra.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b_bus)

        def met() -> bool:
            info = ra.execute_command("CLUSTER", "INFO").decode()
            return "cluster_state:ok" in info and len(ra.execute_command("CLUSTER", "SLOTS")) == 2

        asyncio.run(wait_for(met, timeout=20, message="the two nodes to meet"))
    finally:
        ra.close()
        rb.close()
    return a, 8192


def _stream_in_slot_range(client: redis.Redis, low: int, prefix: str) -> str:
    for i in range(1000):
        name = f"s{i}"
        if int(client.execute_command("CLUSTER", "KEYSLOT", f"{prefix}:{{{name}}}")) >= low:
            return name
    raise AssertionError("no stream name hashes to the second node")


def test_a_cluster_node_gets_a_clear_message(
    cluster_nodes: tuple[RedisServer, int], redis_server_factory: Callable[..., RedisServer]
) -> None:
    node, low = cluster_nodes
    client = redis.Redis(port=node.port)
    try:
        stream = _stream_in_slot_range(client, low, "eb")
    finally:
        client.close()
    for argv in (["publish", stream, "Job", "--data", "{}"], ["info", stream]):
        line = one_clear_line(
            run(*argv, "--redis-url", node.url), "Redis Cluster node", "standalone", "MOVED"
        )
        assert "Redis failed the command" not in line
    empty = redis_server_factory(extra_args=cluster_args())  # owns no slots: CLUSTERDOWN
    one_clear_line(
        run("info", "jobs", "--redis-url", empty.url), "Redis Cluster node", "CLUSTERDOWN"
    )


def test_acl_and_password_failures_name_the_fix(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    try:
        admin.xadd("eb:{jobs}", {"type": "Job", "data": "{}"})
        admin.execute_command(
            "ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all", "-xinfo"
        )
        url = f"redis://reader:pw@127.0.0.1:{server.port}/0"
        one_clear_line(run("info", "jobs", "--redis-url", url), "NOPERM", "xinfo", "ACL SETUSER")
        wrong = f"redis://reader:nope@127.0.0.1:{server.port}/0"
        result = run("streams", "--redis-url", wrong, "--connect-timeout", "30")
        one_clear_line(result, "Redis refused the credentials", "redis://USER:PASSWORD@")
        admin.config_set("requirepass", "secret")
        one_clear_line(
            run("streams", "--redis-url", server.url, "--connect-timeout", "30"),
            "Redis refused the credentials",
            "NOAUTH",
        )
    finally:
        admin.close()


# -- dead letters: --id is the dead letter's own id -----------------------------------


async def _letter(bus: EventBus, dead_id: str, original_id: str, n: int) -> None:
    await bus.redis.xadd(
        bus.keys.dlq("jobs"),
        {
            "type": "Job",
            "data": json.dumps({"n": n}),
            "dlq_stream_id": original_id,
            "dlq_group": "g",
            "dlq_reason": "failed",
        },
        id=dead_id,
    )


async def test_purge_by_id_never_takes_a_letter_whose_original_id_matches(
    bus: EventBus, eventbus_redis_url: str
) -> None:
    await bus.publish(Job(n=0))
    await _letter(bus, "5-0", "1-0", 1)  # its own id is 5-0
    await _letter(bus, "7-0", "5-0", 2)  # its original entry's id is 5-0
    await _letter(bus, "9-0", "5-0", 3)
    dlq = bus.keys.dlq("jobs")
    code, text = await cli(bus, eventbus_redis_url, "dlq", "purge", "jobs", "--id", "5-0", "--yes")
    assert code == 0 and "deleted 1" in text
    assert [e[0] for e in await bus.redis.xrange(dlq)] == [b"7-0", b"9-0"]
    code, text = await cli(
        bus, eventbus_redis_url, "dlq", "purge", "jobs", "--original-id", "5-0", "--dry-run"
    )
    assert code == 0 and "would delete 2" in text
    args = [
        *("dlq", "purge", "jobs", "--original-id", "1-0", "--yes"),
        "--redis-url",
        eventbus_redis_url,
        "--prefix",
        bus.keys.prefix,
    ]
    one_clear_line(run(*args), "no dead letter with original id 1-0")
    assert await bus.redis.xlen(dlq) == 2


# -- group delete ---------------------------------------------------------------------


async def test_group_delete_unblocks_trimming(bus: EventBus, eventbus_redis_url: str) -> None:
    for n in range(5):
        await bus.publish(Job(n=n))
    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "retired", id="0")  # never read anything
    await bus.redis.xgroup_create(key, "busy", id="$")
    settings = Stream("jobs", retention=0.001)
    blocked = await trim_stream(bus.redis, bus.keys, settings, dry_run=True)
    assert blocked.removed == 0 and "retired" in {g.group for g in blocked.groups}

    code, text = await cli(
        bus, eventbus_redis_url, "group", "delete", "jobs", "retired", "--dry-run"
    )
    assert code == 0 and "would delete group retired" in text and "5 unread entries" in text
    assert len(await bus.redis.xinfo_groups(key)) == 2

    base = ["--redis-url", eventbus_redis_url, "--prefix", bus.keys.prefix]
    refused = run("group", "delete", "jobs", "retired", *base)  # stdin is no terminal
    one_clear_line(refused, "pass --yes", "0 pending entries, 5 unread entries")
    assert len(await bus.redis.xinfo_groups(key)) == 2

    code, text = await cli(bus, eventbus_redis_url, "group", "delete", "jobs", "retired", "--yes")
    assert code == 0 and "deleted group retired" in text
    assert [g["name"] for g in await bus.redis.xinfo_groups(key)] == [b"busy"]
    trimmed = await trim_stream(bus.redis, bus.keys, settings)
    assert trimmed.removed == 5


async def test_group_delete_refuses_a_live_group(bus: EventBus, eventbus_redis_url: str) -> None:
    await bus.publish(Job(n=1))
    key = bus.keys.stream("jobs")
    await bus.redis.xgroup_create(key, "live", id="0")
    await bus.redis.xreadgroup("live", "worker-1", {key: ">"}, count=1)
    base = ["--redis-url", eventbus_redis_url, "--prefix", bus.keys.prefix]
    one_clear_line(run("group", "delete", "jobs", "live", "--yes", *base), "worker-1", "--force")
    assert len(await bus.redis.xinfo_groups(key)) == 1
    code, text = await cli(
        bus, eventbus_redis_url, "group", "delete", "jobs", "live", "--yes", "--force"
    )
    assert code == 0 and "1 pending entries" in text and "1 of them active" in text
    assert await bus.redis.xinfo_groups(key) == []
    one_clear_line(run("group", "delete", "jobs", "live", "--yes", *base), "has no group 'live'")


# -- publish --app --------------------------------------------------------------------


async def test_publish_with_app_checks_the_event(bus: EventBus, eventbus_redis_url: str) -> None:
    base = ["--redis-url", eventbus_redis_url, "--prefix", bus.keys.prefix]
    app = ["--app", "tests.apps.recorder"]
    one_clear_line(
        run("publish", "jobs", "Job", "--data", '{"n": "one"}', *app, *base),
        "--data is not a valid Job",
        "Expected `int`, got `str`",
    )
    one_clear_line(
        run("publish", "jobs", "Job", "--data", '{"payload": "x"}', *app, *base),
        "missing required field `n`",
    )
    one_clear_line(
        run("publish", "jobs", "Job", "--data", '{"n": 1, "m": 2}', *app, *base),
        "field(s) m that Job does not declare",
        "its fields: n, payload",
    )
    one_clear_line(
        run("publish", "jobs", "Jbo", "--data", '{"n": 1}', *app, *base),
        "no event type 'Jbo'",
        "Job",
        "Other",
    )
    assert not await bus.redis.exists(bus.keys.stream("jobs"))
    ok = run("publish", "jobs", "Job", "--data", '{"n": 1}', *app, *base)
    assert ok.returncode == 0, ok.stderr
    [(_, fields)] = await bus.redis.xrange(bus.keys.stream("jobs"))
    assert json.loads(fields[b"data"]) == {"n": 1, "payload": ""}  # as the app publishes it
    # without --app, as before: any type, any object
    loose = run("publish", "jobs", "Jbo", "--data", '{"x": 1}', *base)
    assert loose.returncode == 0, loose.stderr
