"""No operator command crashes on what is in Redis.

Entries nobody's publisher would write, planted with redis-py (XADD) in a stream and its
dead-letter stream: payloads nested 100k deep (JSON and msgpack), a 20 MB field,
thousands of fields and headers, names and values that are not UTF-8, ANSI escapes and
bidi controls in names, types and values; dead letters with junk in their dlq_* fields;
a group whose name is not UTF-8, a consumer whose name is an escape sequence; keys of the
wrong type under the prefix; a schedule state holding junk. Every inspection command, in
both its human and its --json form, exits 0 with the bad entry shown as undecodable, its
size said instead of printed, and no control character reaching the output raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest

from eventbus import EventBus
from eventbus.cli import main as cli_main
from eventbus.cli.main import _command, build_parser

pytestmark = pytest.mark.timeout(120)

MB20 = 20 * 1024 * 1024
MB2 = 2 * 1024 * 1024  # the other big fields (each command reads them all: keep it quick)
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_MSGPACK = b"\x91" * 100_000 + b"\xc0"  # a 1-array in a 1-array ... around nil
EVIL = "\x1b[31mred\x1b[0m\x9b2J\u202eevil\x07"  # SGR, a C1 CSI, right-to-left, bell
RAW = ("\x1b", "\x9b", "\u202e", "\x07")  # none of them may reach the output raw


@dataclass
class Planted:
    bus: EventBus
    url: str
    ids: dict[str, str]  # what the entry is -> its id in the stream
    dead: dict[str, str]  # what the dead letter is -> its id in the dead-letter stream


async def _plant(bus: EventBus) -> tuple[dict[str, str], dict[str, str]]:
    r: Any = bus.redis
    key, dlq = bus.keys.stream("hostile"), bus.keys.dlq("hostile")
    entries: dict[str, dict[Any, Any]] = {
        "fine": {"type": "Job", "data": '{"n": 1}'},
        "deep-json": {"type": "Job", "data": DEEP_JSON},
        "deep-msgpack": {"type": "Job", "ct": "application/msgpack", "data": DEEP_MSGPACK},
        "deep-500": {"type": "Job", "data": b"[" * 500 + b"]" * 500},  # decodes; too deep
        "huge": {"type": "Job", "data": b'{"blob": "' + b"x" * MB20 + b'"}', "big": b"y" * MB2},
        "huge-type": {"type": "T" * MB2, "data": "{}"},
        "many-fields": {f"f{i}": str(i) for i in range(5000)},
        "many-headers": {"type": "Job", "data": "{}", **{f"h:x{i}": "v" for i in range(3000)}},
        "not-utf8": {b"\xff\xfename": b"\xfe\xff", "type": b"\xffJob", "data": b"{}"},
        "not-utf8-names": {b"\xff\xfe": b"value", "type": "Job", "data": '{"n": 2}'},
        "binary-data": {"type": "Job", "data": b"\xff\xfe\x00\x01"},
        "evil": {
            "type": EVIL,
            "key": EVIL,
            "source": EVIL,
            f"h:{EVIL}": EVIL,
            "data": json.dumps({EVIL: EVIL}, ensure_ascii=False),
        },
        "evil-fields": {EVIL: EVIL, "other": "\x1b]0;title\x07"},
        "evil-msgpack": {
            "type": "Job",
            "ct": "application/msgpack",
            "data": b"\x81\xa3\x1b[2\xc4\x03\x1b[J",
        },
    }
    ids = {}
    for name, fields in entries.items():
        ids[name] = (await r.xadd(key, fields)).decode()
    # a group whose name is not UTF-8; a consumer whose name is an escape sequence
    await r.xgroup_create(key, b"g-\xff", id="0")
    await r.xgroup_create(key, "g", id="0")
    await r.xreadgroup("g", EVIL, {key: ">"}, count=3)
    dead: dict[str, str] = {}
    base = {"dlq_group": "g", "dlq_reason": "failed", "dlq_attempts": "1"}
    for name, original in entries.items():
        fields = {**original, **base, "dlq_stream_id": ids[name]}
        dead[name] = (await r.xadd(dlq, fields)).decode()
    junk = {
        "type": "Job",
        "data": "{}",
        "dlq_stream_id": "not-an-id" + EVIL,
        "dlq_attempts": "\u00b2",
        "dlq_group": b"\xff",
        "dlq_reason": EVIL,
        "dlq_error": EVIL + "\n" + "e" * MB2,
        "dlq_error_type": EVIL,
        "dlq_traceback": f"Traceback\n  {EVIL}\n" + "t" * MB2,
        "dlq_time": EVIL,
    }
    dead["junk"] = (await r.xadd(dlq, junk)).decode()
    dead["no-fields-of-ours"] = (await r.xadd(dlq, {"x": "1"})).decode()
    dead["huge-attempts"] = (await r.xadd(dlq, {**base, "dlq_attempts": "9" * 5000})).decode()
    # keys of the wrong type under the prefix, and a schedule state holding junk
    await r.set(bus.keys.stream("a-string"), "not a stream")
    await r.xadd(bus.keys.stream("dlq-string"), {"type": "Job", "data": "{}"})
    await r.set(bus.keys.dlq("dlq-string"), "not a stream")
    await r.hset(
        bus.keys.schedule("junk"),
        mapping={
            "fires": "many",
            "spec": EVIL,
            b"\xff": b"\xfe",
            "next_tick": "soon",
            "errors": "1",
        },
    )
    await r.set(bus.keys.schedule("a-string"), "not a hash")
    return ids, dead


@pytest.fixture
async def planted(bus: EventBus, eventbus_redis_url: str) -> Planted:
    ids, dead = await _plant(bus)
    return Planted(bus, eventbus_redis_url, ids, dead)


async def cli(p: Planted, *argv: str) -> str:
    """Run a command in-process; an exception fails the test with its traceback."""
    args = build_parser().parse_args([*argv, "--redis-url", p.url, "--prefix", p.bus.keys.prefix])
    out = io.StringIO()
    code = await _command(args.command, args)(args, out)  # type: ignore[call-arg]
    text = out.getvalue()
    assert code == 0, text
    for char in RAW:
        assert char not in text, f"{argv}: {char!r} reached the output raw"
    assert len(text) < 3 * 1024 * 1024, f"{argv}: {len(text):,} characters of output"
    return text


async def both(p: Planted, *argv: str) -> tuple[str, Any]:
    """The human output and the parsed --json output of one command."""
    human = await cli(p, *argv)
    text = await cli(p, *argv, "--json")
    if argv[0] == "tail":
        return human, [json.loads(line) for line in text.splitlines()]
    return human, json.loads(text)


UNDECODABLE = {
    "deep-json": "nests too deeply",
    "deep-msgpack": "nests too deeply",
    "deep-500": "nests deeper than 100 levels",
    "huge": "20,971,5",  # its size, not its bytes
    "many-fields": "has no 'type' field",
    "not-utf8": "not UTF-8",
    "binary-data": "payload does not decode",
    "evil-fields": "has no 'type' field",
}


async def test_tail_and_show_render_every_entry(planted: Planted) -> None:
    human, lines = await both(planted, "tail", "hostile", "-n", "100")
    by_id = {e["id"]: e for e in lines}
    assert len(by_id) == len(planted.ids)
    for name, reason in UNDECODABLE.items():
        entry = by_id[planted.ids[name]]
        assert reason in entry["error"], (name, entry.get("error"))
        assert "payload" not in entry or entry["payload"] is None
    assert by_id[planted.ids["fine"]]["payload"] == {"n": 1}
    assert by_id[planted.ids["not-utf8-names"]]["payload"] == {"n": 2}
    assert by_id[planted.ids["evil"]]["envelope"]["type"] == EVIL  # the data, escaped only
    assert "\\x1b[31mred" in human and "\\u202e" in human and "undecodable:" in human
    assert "more headers" in human and "more fields not shown" in human
    huge_type = by_id[planted.ids["huge-type"]]["envelope"]["type"]
    assert huge_type.endswith("[clipped: 2,097,152 bytes in all]")
    for name in [*UNDECODABLE, "evil", "huge-type"]:
        entry_id = planted.ids[name]
        human, shown = await both(planted, "show", "hostile", entry_id)
        assert shown["id"] == entry_id, name
        if name in UNDECODABLE:
            assert UNDECODABLE[name] in shown["error"] and "undecodable:" in human, name


async def test_dead_letter_commands_render_every_letter(planted: Planted) -> None:
    human, letters = await both(planted, "dlq", "ls", "hostile", "--limit", "1000")
    assert max(map(len, human.splitlines())) < 1000  # a 2 MB type is clipped in the table
    assert {d["id"] for d in letters} == set(planted.dead.values())
    junk = next(d for d in letters if d["id"] == planted.dead["junk"])
    assert junk["attempts"] is None and junk["event"]["time"] is None
    assert junk["error"].endswith("bytes in all]")
    for name in [*UNDECODABLE, "evil", "junk", "no-fields-of-ours", "huge-attempts"]:
        dead_id = planted.dead[name]
        human, shown = await both(planted, "dlq", "show", "hostile", dead_id)
        assert shown["id"] == dead_id, name
        if name in UNDECODABLE:
            assert UNDECODABLE[name] in shown["event"]["error"], name
            assert "undecodable:" in human
    _, shown = await both(planted, "dlq", "show", "hostile", planted.dead["junk"])
    assert shown["traceback"].startswith("[clipped: ")
    assert len(shown["traceback"]) < 70_000
    for action in ("purge", "redrive"):
        ids = [x for name in ("deep-json", "huge", "evil") for x in ("--id", planted.dead[name])]
        text = await cli(planted, "dlq", action, "hostile", *ids, "--dry-run")
        assert "3 dead letter(s)" in text


async def test_redrive_writes_back_exactly_what_was_stored(planted: Planted) -> None:
    r: Any = planted.bus.redis
    text = await cli(
        planted,
        "dlq",
        "redrive",
        "hostile",
        "--id",
        planted.dead["not-utf8"],
        "--id",
        planted.dead["deep-msgpack"],
    )
    assert "redrove 2" in text
    written = [
        f
        for _, f in await r.xrange(planted.bus.keys.stream("hostile"), count=1000)
        if b"target" in f
    ]
    assert len(written) == 2 and {w[b"target"] for w in written} == {b"g"}
    not_utf8 = next(w for w in written if b"\xff\xfename" in w)
    assert not_utf8[b"\xff\xfename"] == b"\xfe\xff" and not_utf8[b"type"] == b"\xffJob"
    assert any(w[b"data"] == DEEP_MSGPACK for w in written)
    text = await cli(planted, "dlq", "purge", "hostile", "--id", planted.dead["huge"], "--yes")
    assert "deleted 1" in text


async def test_stream_group_and_live_views_render(planted: Planted) -> None:
    human, streams = await both(planted, "streams")
    assert {s["stream"] for s in streams} >= {"hostile", "dlq-string"}
    human, info = await both(planted, "info", "hostile")
    assert {g["group"] for g in info["groups"]} == {"g", "g-\ufffd"}
    consumers = [c["consumer"] for g in info["groups"] for c in g["consumers"]]
    assert consumers == [EVIL]
    assert "\\x1b[31mred" in human
    human, pending = await both(planted, "pending", "hostile", "g")
    assert len(pending) == 3 and {p["consumer"] for p in pending} == {EVIL}
    await cli(planted, "top", "--iterations", "1")
    await cli(planted, "top", "--iterations", "1", "--json")
    human, rows = await both(planted, "schedules")
    junk = next(row for row in rows if row["name"] == "junk")
    assert junk["fires"] is None and junk["errors"] == 1 and junk["spec"] == EVIL
    assert "a-string" not in {row["name"] for row in rows}


async def main(p: Planted, *argv: str) -> tuple[int, str, str]:
    """The whole command line (errors printed, exit status) in a thread of its own."""
    full = [*argv, "--redis-url", p.url, "--prefix", p.bus.keys.prefix]
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli_main.main(full)

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


async def test_keys_of_the_wrong_type_are_reported_clearly(planted: Planted) -> None:
    for argv in (
        ["info", "a-string"],
        ["tail", "a-string"],
        ["show", "a-string", "1-0"],
        ["dlq", "ls", "dlq-string"],
        ["pending", "a-string", "g"],
        ["group", "delete", "a-string", "g", "--yes"],
    ):
        code, out, err = await main(planted, *argv)
        assert code == 2, (argv, out, err)
        assert "holds a string, not a stream" in err, (argv, err)
        assert len(err.strip().splitlines()) == 1
    code, out, err = await main(planted, "dlq", "ls", "hostile")  # end to end
    assert code == 0 and not err, err
    assert not any(char in out for char in RAW)
