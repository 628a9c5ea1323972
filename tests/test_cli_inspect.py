"""The inspection and repair commands against a real Redis holding what a real worker left:
handled entries, dead letters (a failing handler and an undecodable entry), an entry
written by redis-cli, pending entries of a consumer that never acknowledged."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventbus import Backoff, EventBus, Router
from eventbus.cli.main import build_parser
from eventbus.testing import RedisServer, running_worker, wait_for
from tests.apps.events import Job
from tests.helpers import group_state, pending_count, run_cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


@dataclass
class World:
    bus: EventBus
    url: str
    prefix: str
    ids: dict[str, str]  # what each entry is -> its stream id


async def cli(world: World, *argv: str) -> tuple[int, str]:
    """Run a command in-process (its output captured as a non-terminal would be)."""
    args = build_parser().parse_args([*argv, "--redis-url", world.url, "--prefix", world.prefix])
    out = io.StringIO()
    code = await args.handler(args, out)
    return code, out.getvalue()


async def cli_json(world: World, *argv: str) -> Any:
    code, text = await cli(world, *argv, "--json")
    assert code == 0
    return json.loads(text)


def run(world: World, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command as a process (for exit codes and stderr)."""
    return run_cli(*argv, "--redis-url", world.url, "--prefix", world.prefix, stdin=stdin)


def failed_cleanly(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


@pytest.fixture
async def world(bus: EventBus, eventbus_redis_url: str, eventbus_prefix: str) -> World:
    router = Router()

    @router.subscribe(name="ok")
    async def ok(event: Job) -> None:
        return None

    @router.subscribe(name="fails", max_attempts=1, backoff=Backoff(initial=0.01))
    async def fails(event: Job) -> None:
        if event.n == 3:
            raise ValueError("three is poison")

    key = bus.keys.stream("jobs")
    ids: dict[str, str] = {}
    async with running_worker(bus, router):
        for n in range(10):
            ids[f"job{n}"] = await bus.publish(Job(n=n))
        ids["keyed"] = await bus.publish(Job(n=10), key="k-1")
        ids["undecodable"] = (
            await bus.redis.xadd(key, {"type": "Job", "data": "{not json"})
        ).decode()
        port = str(urllib.parse.urlsplit(eventbus_redis_url).port)
        written = subprocess.run(  # noqa: ASYNC221 (setup, once)
            ["redis-cli", "-p", port, "XADD", key, "*", "type", "Job", "data", '{"n": 99}'],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        ids["redis-cli"] = written.stdout.strip()

        async def settled() -> bool:
            return (
                await bus.redis.xlen(bus.keys.dlq("jobs")) == 3
                and await pending_count(bus, "jobs", "test.ok") == 0
                and await pending_count(bus, "jobs", "test.fails") == 0
            )

        await wait_for(settled, message="three dead letters, nothing pending")
    # a group whose consumer read two entries and never acknowledged them
    await bus.redis.xgroup_create(key, "test.stuck", id="0")
    await bus.redis.xreadgroup("test.stuck", "c1", {key: ">"}, count=2)
    return World(bus, eventbus_redis_url, bus.keys.prefix, ids)


# -- reading ----------------------------------------------------------------------------


async def test_streams(world: World) -> None:
    [jobs] = await cli_json(world, "streams")
    assert set(jobs) == {"stream", "key", "length", "first_id", "first_age_s", "last_id",
                         "last_age_s", "groups", "lag", "dlq_length", "memory_bytes"}  # fmt: skip
    assert jobs["stream"] == "jobs" and jobs["key"] == world.bus.keys.stream("jobs")
    assert jobs["length"] == 13 and jobs["groups"] == 3 and jobs["dlq_length"] == 3
    assert jobs["first_id"] == world.ids["job0"] and jobs["last_id"] == world.ids["redis-cli"]
    assert jobs["memory_bytes"] > 0
    assert 0 <= jobs["last_age_s"] < 60
    code, text = await cli(world, "streams")
    lines = text.splitlines()
    assert code == 0 and lines[0].split() == ["STREAM", "LENGTH", "FIRST", "LAST", "GROUPS",
                                              "LAG", "DLQ", "MEMORY"]  # fmt: skip
    assert lines[1].startswith("jobs ") and " 13 " in lines[1]
    assert "\x1b[" not in text  # no colour when not on a terminal


async def test_info(world: World) -> None:
    detail = await cli_json(world, "info", "jobs")
    groups = {g["group"]: g for g in detail["groups"]}
    assert set(groups) == {"test.ok", "test.fails", "test.stuck"}
    stuck = groups["test.stuck"]
    assert stuck["pending"] == 2 and stuck["oldest_pending_id"] == world.ids["job0"]
    assert stuck["oldest_pending_age_s"] >= 0
    assert [c["consumer"] for c in stuck["consumers"]] == ["c1"]
    assert stuck["consumers"][0]["pending"] == 2
    assert groups["test.fails"]["dead_letters"] == 2  # n=3 and the undecodable entry
    assert groups["test.ok"]["dead_letters"] == 1 and groups["test.ok"]["pending"] == 0
    assert groups["test.ok"]["lag"] == 0  # caught up: known on 6.2 too
    if stuck["lag"] is not None:  # Redis >= 7
        assert stuck["lag"] == 11
    code, text = await cli(world, "info", "jobs")
    assert code == 0 and "stream jobs" in text and "dead letters 3" in text
    assert any(line.split()[:3] == ["test.stuck", "c1", "2"] for line in text.splitlines())


async def test_pending(world: World) -> None:
    rows = await cli_json(world, "pending", "jobs", "test.stuck")
    assert [r["id"] for r in rows] == [world.ids["job0"], world.ids["job1"]]
    assert all(r["consumer"] == "c1" and r["deliveries"] == 1 and r["type"] == "Job"
               for r in rows)  # fmt: skip
    assert len(await cli_json(world, "pending", "jobs", "test.stuck", "--limit", "1")) == 1
    assert await cli_json(world, "pending", "jobs", "test.stuck", "--idle", "1h") == []
    assert await cli_json(world, "pending", "jobs", "test.stuck", "--consumer", "c9") == []
    _, text = await cli(world, "pending", "jobs", "test.stuck")
    assert text.splitlines()[0].split() == ["ID", "CONSUMER", "IDLE", "DELIVERIES", "TYPE"]


async def test_tail_decodes_every_kind_of_entry(world: World) -> None:
    code, text = await cli(world, "tail", "jobs", "-n", "3")
    assert code == 0
    heads = [line for line in text.splitlines() if not line.startswith("  ")]
    assert [h.split()[0] for h in heads] == [world.ids["keyed"], world.ids["undecodable"],
                                             world.ids["redis-cli"]]  # fmt: skip
    assert "key=k-1" in heads[0]
    assert "undecodable: " in text and '{"n": 99}' in text

    lines = [
        json.loads(line) for line in (await cli(world, "tail", "jobs", "--json"))[1].splitlines()
    ]
    assert len(lines) == 10 and lines[-1]["payload"] == {"n": 99}
    bad = next(e for e in lines if e["id"] == world.ids["undecodable"])
    assert "payload does not decode" in bad["error"]

    keyed = (await cli(world, "tail", "jobs", "--key", "k-1", "--json"))[1].splitlines()
    assert [json.loads(x)["payload"]["n"] for x in keyed] == [10]
    first = (await cli(world, "tail", "jobs", "--from", world.ids["job1"], "-n", "2", "--json"))[1]
    assert [json.loads(x)["id"] for x in first.splitlines()] == [world.ids["job1"],
                                                                 world.ids["job2"]]  # fmt: skip
    later = (await cli(world, "tail", "jobs", "--from", "2000-01-01T00:00:00Z", "-n", "1",
                       "--json"))[1]  # fmt: skip
    assert json.loads(later)["id"] == world.ids["job0"]


async def test_show_tells_where_an_entry_stands_in_each_group(world: World) -> None:
    shown = await cli_json(world, "show", "jobs", world.ids["job3"])
    assert shown["payload"] == {"n": 3, "payload": ""}
    assert shown["envelope"]["type"] == "Job" and shown["envelope"]["source"] == "test"
    states = {g["group"]: g for g in shown["groups"]}
    assert states["test.ok"]["state"] == "passed"  # acknowledged (or skipped)
    assert states["test.fails"]["state"] == "dead-lettered"
    assert states["test.fails"]["dead_letter_id"]
    assert states["test.stuck"]["state"] == "unread"
    first = {
        g["group"]: g for g in (await cli_json(world, "show", "jobs", world.ids["job0"]))["groups"]
    }
    assert first["test.stuck"]["state"] == "pending"
    assert first["test.stuck"]["consumer"] == "c1" and first["test.stuck"]["deliveries"] == 1
    code, text = await cli(world, "show", "jobs", world.ids["job3"])
    assert code == 0 and "dead-lettered as " in text


async def test_publish_writes_an_envelope_the_workers_decode(world: World) -> None:
    code, text = await cli(world, "publish", "jobs", "Job", "--data", '{"n": 42}', "--key", "p-1",
                           "--header", "origin=ops")  # fmt: skip
    entry_id = text.strip()
    assert code == 0
    again = (await cli(world, "publish", "jobs", "Job", "--data", '{"n": 42}', "--key", "p-1"))[1]
    assert again.startswith(entry_id) and "duplicate" in again
    shown = await cli_json(world, "show", "jobs", entry_id)
    assert shown["payload"] == {"n": 42}
    assert shown["envelope"]["key"] == "p-1" and shown["envelope"]["headers"] == {"origin": "ops"}
    assert shown["envelope"]["source"] == "eventbus-cli" and shown["envelope"]["id"]

    seen: list[Job] = []
    router = Router()

    @router.subscribe(name="reader", start_from="beginning")
    async def reader(event: Job) -> None:
        seen.append(event)

    async with running_worker(world.bus, router):
        await wait_for(lambda: any(e.n == 42 for e in seen), message="the published event")


# -- repairing --------------------------------------------------------------------------


async def test_dlq_ls_show_and_redrive_to_the_group_that_failed(world: World) -> None:
    letters = await cli_json(world, "dlq", "ls", "jobs")
    assert len(letters) == 3
    poison = next(d for d in letters if d["stream_id"] == world.ids["job3"])
    assert poison["group"] == "test.fails" and poison["reason"] == "failed"
    assert poison["error"] == "three is poison" and poison["attempts"] == 1
    assert poison["event"]["payload"] == {"n": 3, "payload": ""}
    assert {d["reason"] for d in letters} == {"failed", "undecodable"}
    assert len(await cli_json(world, "dlq", "ls", "jobs", "--group", "test.ok")) == 1
    full = await cli_json(world, "dlq", "show", "jobs", world.ids["job3"])
    assert "ValueError: three is poison" in full["traceback"]

    code, text = await cli(world, "dlq", "redrive", "jobs", "--id", poison["id"], "--dry-run")
    assert code == 0 and "would redrive 1" in text
    assert await world.bus.redis.xlen(world.bus.keys.dlq("jobs")) == 3
    code, text = await cli(world, "dlq", "redrive", "jobs", "--id", poison["id"])
    assert code == 0 and "redrove 1" in text
    assert await world.bus.redis.xlen(world.bus.keys.dlq("jobs")) == 2
    new_id = text.split("-> ")[1].split()[0]
    redriven = await cli_json(world, "show", "jobs", new_id)
    assert redriven["envelope"]["target"] == "test.fails"
    assert redriven["envelope"]["id"] == poison["event"]["envelope"]["id"]  # the same event
    states = {g["group"]: g for g in redriven["groups"]}
    assert states["test.ok"]["state"] == "not for this group"
    assert states["test.ok"]["target"] == "test.fails"

    handled: dict[str, list[int]] = {"ok": [], "fails": []}
    router = Router()

    @router.subscribe(name="ok")
    async def ok(event: Job) -> None:
        handled["ok"].append(event.n)

    @router.subscribe(name="fails")
    async def fixed(event: Job) -> None:
        handled["fails"].append(event.n)

    async with running_worker(world.bus, router):
        await wait_for(lambda: handled["fails"] == [3], message="the redriven entry")

        async def ok_went_past() -> bool:
            state = await group_state(world.bus, "jobs", "test.ok")
            return state["last-delivered-id"] == new_id and state["pending"] == 0

        await wait_for(ok_went_past, message="test.ok reading past the redriven entry")
    assert handled["ok"] == []  # the other group skipped it


async def test_dlq_purge_asks_first(world: World) -> None:
    dlq = world.bus.keys.dlq("jobs")
    code, text = await cli(world, "dlq", "purge", "jobs", "--all", "--dry-run")
    assert code == 0 and "would delete 3" in text and await world.bus.redis.xlen(dlq) == 3
    refused = run(world, "dlq", "purge", "jobs", "--all")  # stdin is not a terminal
    failed_cleanly(refused, "pass --yes")
    assert await world.bus.redis.xlen(dlq) == 3
    _, text = await cli(world, "dlq", "purge", "jobs", "--group", "test.ok", "--all", "--yes")
    assert "deleted 1" in text and await world.bus.redis.xlen(dlq) == 2
    failed_cleanly(run(world, "dlq", "purge", "jobs", "--id", "1-0", "--yes"),
                   "no dead letter 1-0")  # fmt: skip
    assert await world.bus.redis.xlen(dlq) == 2


async def test_group_reset_replays_and_asks_before_skipping(world: World) -> None:
    code, text = await cli(world, "group", "reset", "jobs", "test.ok", "--to", "beginning",
                           "--dry-run")  # fmt: skip
    assert code == 0 and "13 entries will be delivered again" in text
    before = await world.bus.redis.xinfo_groups(world.bus.keys.stream("jobs"))
    code, text = await cli(world, "group", "reset", "jobs", "test.ok", "--to", world.ids["job9"])
    assert "3 entries will be delivered again" in text
    after = {g["name"].decode(): g for g in
             await world.bus.redis.xinfo_groups(world.bus.keys.stream("jobs"))}  # fmt: skip
    assert after["test.ok"]["last-delivered-id"].decode() == world.ids["job9"]
    assert len(before) == len(after)
    if "entries-added" in await world.bus.redis.xinfo_stream(world.bus.keys.stream("jobs")):
        assert after["test.ok"]["lag"] == 3  # Redis 7: the lag is known right after the move

    failed_cleanly(run(world, "group", "reset", "jobs", "test.stuck", "--to", "end"),
                   "would skip 11 unread entries")  # fmt: skip
    code, text = await cli(world, "group", "reset", "jobs", "test.stuck", "--to", "end", "--yes")
    assert "11 unread entries are skipped" in text
    assert "2 pending entries stay pending" in text

    # back over pending entries: reading them again would reset their delivery counts
    failed_cleanly(run(world, "group", "reset", "jobs", "test.stuck", "--to", "beginning"),
                   "restarts their delivery counts")  # fmt: skip
    # beyond the stream's last entry: the group would miss what comes next
    failed_cleanly(run(world, "group", "reset", "jobs", "test.ok", "--to",
                       "2100-01-01T00:00:00Z"), "lies beyond stream 'jobs'")  # fmt: skip
    failed_cleanly(run(world, "group", "reset", "jobs", "test.ok", "--to", "1969-01-01"),
                   "before 1970")  # fmt: skip
    # a time: entries from that millisecond on come next, the first of them included
    first_ms = int(world.ids["job0"].split("-")[0])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first_ms / 1000))
    stamp += f".{first_ms % 1000:03d}Z"
    code, text = await cli(world, "group", "reset", "jobs", "test.ok", "--to", stamp,
                           "--dry-run")  # fmt: skip
    assert "10 entries will be delivered again" in text  # job0 (at that ms) to job9


async def test_delete_consumer_refuses_to_drop_pending_entries(world: World) -> None:
    key = world.bus.keys.stream("jobs")
    failed_cleanly(run(world, "group", "delete-consumer", "jobs", "test.stuck", "c1"),
                   "owns 2 pending entries")  # fmt: skip
    # c1 read a moment ago: probably a running worker
    failed_cleanly(run(world, "group", "delete-consumer", "jobs", "test.stuck", "c1",
                       "--claim-to", "c2"), "was active")  # fmt: skip
    code, text = await cli(world, "group", "delete-consumer", "jobs", "test.stuck", "c1",
                           "--claim-to", "c2", "--force")  # fmt: skip
    assert code == 0 and "2 pending entries handed to c2" in text
    consumers = {c["name"].decode(): c for c in
                 await world.bus.redis.xinfo_consumers(key, "test.stuck")}  # fmt: skip
    assert set(consumers) == {"c2"} and consumers["c2"]["pending"] == 2
    rows = await cli_json(world, "pending", "jobs", "test.stuck")
    assert [r["deliveries"] for r in rows] == [1, 1]  # JUSTID: counts kept


async def test_trim_stops_at_what_a_group_still_needs(world: World) -> None:
    report = await cli_json(world, "trim", "jobs", "--retention", "0", "--dry-run")
    assert report["removed"] == 0 and report["cut"] is None
    assert "test.stuck still needs" in report["reason"]
    assert await world.bus.redis.xlen(world.bus.keys.stream("jobs")) == 13
    await world.bus.redis.xgroup_destroy(world.bus.keys.stream("jobs"), "test.stuck")
    code, text = await cli(world, "trim", "jobs", "--retention", "0")
    assert code == 0 and "removed 13 of 13" in text
    assert await world.bus.redis.xlen(world.bus.keys.stream("jobs")) == 0


async def test_redrive_writes_each_dead_letter_once_and_checks_first(world: World) -> None:
    from eventbus import inspection as ins

    letters = await ins.dead_letters(world.bus, "jobs", group="test.fails")
    assert len(letters) == 2
    # two operators redriving the same letters at once: each is written back once
    first, second = await asyncio.gather(ins.redrive(world.bus, "jobs", letters),
                                         ins.redrive(world.bus, "jobs", letters))  # fmt: skip
    outcomes = [r.gone for r in first] + [r.gone for r in second]
    assert sorted(outcomes) == [False, False, True, True]
    assert await world.bus.redis.xlen(world.bus.keys.stream("jobs")) == 15

    # a letter for a group the stream no longer has: refused, nothing changed
    await world.bus.redis.xgroup_destroy(world.bus.keys.stream("jobs"), "test.ok")
    failed_cleanly(run(world, "dlq", "redrive", "jobs", "--all"), "no longer has")
    assert await world.bus.redis.xlen(world.bus.keys.dlq("jobs")) == 1
    assert await world.bus.redis.xlen(world.bus.keys.stream("jobs")) == 15


async def test_odd_entries_do_not_break_the_readers(world: World) -> None:
    import msgspec

    key = world.bus.keys.stream("jobs")
    odd = {
        "msgpack-bytes-keys": {"type": "Job", "ct": "application/msgpack",
                               "data": msgspec.msgpack.encode({b"binkey": b"\xff\x00"})},
        "binary-type": {"type": b"\xff\xfe", "data": b"{}"},
        "no-data": {"type": "Job"},
    }  # fmt: skip
    ids = {name: (await world.bus.redis.xadd(key, fields)).decode()  # type: ignore[arg-type]
           for name, fields in odd.items()}  # fmt: skip
    code, text = await cli(world, "tail", "jobs", "-n", "3", "--json")
    assert code == 0
    lines = {e["id"]: e for e in map(json.loads, text.splitlines())}
    assert lines[ids["msgpack-bytes-keys"]]["payload"] == {"binkey": "b'\\xff\\x00'"}
    assert "no 'data' field" in lines[ids["no-data"]]["error"]
    code, text = await cli(world, "tail", "jobs", "-n", "3")
    assert code == 0 and "undecodable" in text
    for entry_id in ids.values():
        assert (await cli(world, "show", "jobs", entry_id))[0] == 0
    assert (await cli(world, "pending", "jobs", "test.stuck"))[0] == 0


async def test_tail_follows_from_where_it_read_and_says_when_a_filter_gave_up(
    world: World,
) -> None:
    from eventbus import inspection as ins

    found = await ins.tail(world.bus, "jobs", count=2)
    assert [e.id for e in found.entries] == [world.ids["undecodable"], world.ids["redis-cli"]]
    assert found.follow_after == world.ids["redis-cli"] and not found.limit_reached
    some = await ins.tail(world.bus, "jobs", count=2, start=world.ids["job1"])
    assert some.follow_after == world.ids["job2"]  # following goes on after the last shown
    nothing = await ins.tail(world.bus, "jobs", count=5, types=["Nope"], scan_limit=5)
    assert nothing.entries == [] and nothing.limit_reached


async def test_publish_refuses_what_it_cannot_write_faithfully(world: World) -> None:
    failed_cleanly(run(world, "publish", "new stream", "Job", "--data", "{}"),
                   "invalid stream name")  # fmt: skip
    failed_cleanly(run(world, "publish", "jobs", "Job", "--data", '{"a": NaN}'),
                   "NaN, which JSON does not allow")  # fmt: skip
    assert await world.bus.redis.xlen(world.bus.keys.stream("jobs")) == 13


def test_a_closed_pipe_is_not_an_error(world: World) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTBUS_REDIS_URL"}
    result = subprocess.run(
        f"{sys.executable} -m eventbus.cli.main tail jobs -n 10 --redis-url {world.url} "
        f"--prefix {world.prefix} | head -1",
        shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith(world.ids["job3"])
    assert result.stderr == "", result.stderr


# -- errors -----------------------------------------------------------------------------


def test_errors_are_one_line_with_the_fix(world: World) -> None:
    failed_cleanly(run(world, "info", "nope"), "no stream 'nope' under prefix")
    failed_cleanly(run(world, "pending", "jobs", "nogroup"), "has no group 'nogroup'")
    failed_cleanly(run(world, "show", "jobs", "1-0"), "has no entry 1-0")
    failed_cleanly(run(world, "publish", "jobs", "Job", "--data", "{"), "--data is not valid JSON")
    failed_cleanly(run(world, "publish", "jobs", "Job", "--data", "[1]"), "must be a JSON object")
    for argv, message in (
        (["show", "jobs", "abc"], "'abc' is not a stream id"),
        (["tail", "jobs", "--from", "yesterday"], "neither a stream id nor a time"),
        (["pending", "jobs", "g", "--idle", "soon"], "'soon' is not a duration"),
        (["dlq", "redrive", "jobs"], "one of the arguments --id --original-id --all is required"),
        (["dlq", "ls", "jobs", "--limit", "0"], "must be at least 1"),
    ):
        result = run(world, *argv)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_unreachable_redis_hides_the_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventbus.cli.main", "streams", "--redis-url",
         "redis://:hunter2@127.0.0.1:1/0", "--connect-timeout", "0.3"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    failed_cleanly(result, "cannot reach Redis at redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in result.stderr + result.stdout


# -- live commands in a terminal ----------------------------------------------------------


class Terminal:
    """A command running in a pseudo-terminal; `screen` is everything it printed."""

    def __init__(self, world: World, *argv: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventbus.cli.main", *argv,
             "--redis-url", world.url, "--prefix", world.prefix],
            cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.screen = ""

    def read(self) -> str:
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            self.screen += chunk.decode(errors="replace")
        return self.screen

    async def shows(self, text: str, timeout: float = 20) -> None:
        await wait_for(lambda: text in self.read(), timeout=timeout,
                       message=f"{text!r} on the terminal")  # fmt: skip

    async def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)

        def exited() -> bool:
            self.read()  # keep draining the terminal: a full one would block the process
            return self.proc.poll() is not None

        await wait_for(exited, timeout=15, message="the process to exit on SIGINT")
        self.read()
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


async def test_tail_follow_streams_live_until_ctrl_c(world: World) -> None:
    term = Terminal(world, "tail", "jobs", "-n", "1", "--follow")
    try:
        await term.shows(world.ids["redis-cli"])
        new_id = await world.bus.publish(Job(n=777))
        await term.shows(new_id)
        await term.shows('"n": 777')
        assert "\x1b[" in term.screen  # colour on a terminal
        assert await term.interrupt() == 0
        assert "Traceback" not in term.screen
    finally:
        term.close()


async def test_top_refreshes_and_quits_on_ctrl_c(world: World) -> None:
    term = Terminal(world, "top", "--interval", "0.2")
    try:
        await term.shows("test.stuck")
        await world.bus.publish_many([Job(n=n) for n in range(5)])
        await term.shows("eventbus top")
        mark = len(term.read())
        await wait_for(lambda: "test.stuck" in term.read()[mark:], message="a refresh")
        assert await term.interrupt() == 0
        assert "\x1b[?1049h" in term.screen and term.screen.rstrip().endswith("\x1b[?1049l")
        assert "Traceback" not in term.screen
    finally:
        term.close()


async def test_top_json_reports_rates(world: World) -> None:
    argv = ["top", "--iterations", "2", "--interval", "0.3", "--json"]
    args = build_parser().parse_args([*argv, "--redis-url", world.url, "--prefix", world.prefix])
    out = io.StringIO()
    publishing = asyncio.create_task(world.bus.publish_many([Job(n=n) for n in range(20)]))
    assert await args.handler(args, out) == 0
    await publishing
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    [jobs] = second["streams"]
    groups = {g["group"]: g for g in jobs["groups"]}
    assert groups["test.stuck"]["pending"] == 2 and groups["test.stuck"]["consumers"] == 1
    assert first["streams"][0]["publish_rate"] is None  # no rate before the second look
    if groups["test.ok"]["lag"] is not None:  # Redis >= 7: rates from the counters
        assert jobs["publish_rate"] is not None and jobs["publish_rate"] >= 0


def test_every_read_command_takes_json() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("streams", "info", "pending", "tail", "show", "top", "schedules"):
        assert "--json" in subs.choices[name].format_help(), name
    dlq = next(a for a in subs.choices["dlq"]._actions
               if isinstance(a, argparse._SubParsersAction))  # fmt: skip
    for name in ("ls", "show"):
        assert "--json" in dlq.choices[name].format_help(), name


async def test_top_keeps_going_while_redis_is_away(eventbus_prefix: str) -> None:
    with RedisServer() as server:
        bus = EventBus.from_url(server.url, service="test", prefix=eventbus_prefix)
        try:
            await bus.publish(Job(n=1))
        finally:
            await bus.aclose()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventbus.cli.main", "top", "--json", "--interval", "0.2",
            "--redis-url", server.url, "--prefix", eventbus_prefix,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None

        async def next_view() -> dict[str, Any]:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "top ended"
            return dict(json.loads(line))

        try:
            assert "streams" in await next_view()
            server.kill()
            while "error" not in (view := await next_view()):
                pass
            assert "Redis unavailable" in view["error"]
            server.start()
            while "streams" not in (view := await next_view()):  # back, without a restart
                pass
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()


def test_read_commands_work_on_the_embedded_default_quietly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTBUS_REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "eventbus.cli.main", "streams", "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no streams under prefix 'eb'\n"
    assert result.stderr == ""  # the answer only: no log lines about the embedded server


async def test_reset_keeps_the_lag_right_while_publishing(world: World) -> None:
    key = world.bus.keys.stream("jobs")
    counters = "entries-added" in await world.bus.redis.xinfo_stream(key)  # Redis >= 7
    stop = asyncio.Event()

    async def publish() -> None:
        while not stop.is_set():
            await world.bus.publish_many([Job(n=n) for n in range(50)])

    async def grown_by(n: int, since: int) -> bool:
        return int(await world.bus.redis.xlen(key)) >= since + n

    publishing = asyncio.create_task(publish())
    try:
        await wait_for(lambda: grown_by(500, 13), message="publishing under way")
        code, text = await cli(world, "group", "reset", "jobs", "test.ok", "--to",
                               world.ids["job5"])  # fmt: skip
        assert code == 0, text
        during = int(await world.bus.redis.xlen(key))
        await wait_for(lambda: grown_by(500, during), message="publishing after the reset")
    finally:
        stop.set()
        await publishing
    while await world.bus.redis.xreadgroup("test.ok", "reader", {key: ">"}, count=10_000):
        pass
    [ok] = [g for g in await world.bus.redis.xinfo_groups(key) if g["name"] == b"test.ok"]
    [[last, _]] = await world.bus.redis.xrevrange(key, count=1)
    assert ok["last-delivered-id"] == last  # replayed from job5 and read to the end
    if counters:
        assert ok["lag"] == 0  # nothing left, and Redis agrees: the counter was set right
    else:
        assert "lag" not in ok  # Redis 6.2 keeps no counter to set


async def test_dead_letters_outlive_their_stream(world: World) -> None:
    await world.bus.redis.delete(world.bus.keys.stream("jobs"))
    assert len(await cli_json(world, "dlq", "ls", "jobs")) == 3
    code, text = await cli(world, "dlq", "purge", "jobs", "--all", "--yes")
    assert code == 0 and "deleted 3" in text


async def test_tail_follow_rides_out_a_redis_restart(eventbus_prefix: str) -> None:
    with RedisServer() as server:
        bus = EventBus.from_url(server.url, service="test", prefix=eventbus_prefix)
        await bus.publish(Job(n=0))  # the stream must exist when tail starts
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventbus.cli.main", "tail", "jobs", "-n", "1", "-f", "--json",
            "--redis-url", server.url, "--prefix", eventbus_prefix,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def next_event() -> dict[str, Any]:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "tail ended"
            return dict(json.loads(line))

        try:
            # shown either as the last entry at start or live: both paths end in `first`
            first = await bus.publish(Job(n=1))
            seen = [await next_event()]
            while seen[-1]["id"] != first:
                seen.append(await next_event())
            server.kill()
            server.start()
            await bus.check_connection(10)
            after = await bus.publish(Job(n=2))
            assert (await next_event())["id"] == after
            assert proc.returncode is None
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            await bus.aclose()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
