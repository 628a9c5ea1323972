"""``eventbus asyncapi`` and ``eventbus check``: documents and reports built from an app
alone (no Redis), and the one-line errors of apps that do not load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from eventbus import EventBus, Worker
from eventbus.appcheck import check_app
from eventbus.cli.loader import load_app
from eventbus.cli.main import main
from tests.helpers import run_cli

SHOP = "tests.apps.shop_app"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def eventbus(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, drop=())


def asyncapi(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "asyncapi", *args)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The value a local JSON reference (``#/a/b``) points at; KeyError if none."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# -- asyncapi ---------------------------------------------------------------------------


def test_asyncapi_of_the_sample_app(capsys: pytest.CaptureFixture[str]) -> None:
    doc = asyncapi(capsys, "handlers")
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "handlers" and doc["info"]["version"] == "0.0.0"
    assert doc["defaultContentType"] == "application/json"
    channels = doc["channels"]
    assert list(channels) == ["notes", "notes-maintenance"]
    assert channels["notes"]["address"] == "eb:{notes}"
    assert channels["notes"]["x-eventbus"]["dlq"] == "eb:{notes}:dlq"
    assert channels["notes-maintenance"]["address"] == "eb:{notes-maintenance}"
    assert list(channels["notes"]["messages"]) == ["NoteCreated", "NoteDeleted"]
    assert list(channels["notes-maintenance"]["messages"]) == ["CleanupOldNotes"]
    assert list(doc["operations"]) == [
        "handlers.audit-log", "handlers.note-cleanup", "handlers.note-store",
        "handlers.notifier", "handlers.search-index", "schedule.cleanup-old-notes",
    ]  # fmt: skip
    notifier = doc["operations"]["handlers.notifier"]
    assert notifier["action"] == "receive"
    assert notifier["channel"] == {"$ref": "#/channels/notes"}
    assert notifier["messages"] == [{"$ref": "#/channels/notes/messages/NoteCreated"}]
    assert notifier["x-eventbus"] == {
        "group": "handlers.notifier", "handler": "notifier", "concurrency": 8,
        "max_attempts": 3, "lease_s": 30.0, "timeout_s": None, "idempotent": False,
        "start_from": "new",
    }  # fmt: skip
    assert doc["operations"]["handlers.audit-log"]["x-eventbus"]["idempotent"] is True
    # the schedule's return annotation (-> CleanupOldNotes) tells what it publishes
    cleanup = doc["operations"]["schedule.cleanup-old-notes"]
    assert cleanup["action"] == "send"
    assert cleanup["channel"] == {"$ref": "#/channels/notes-maintenance"}
    assert cleanup["messages"] == [
        {"$ref": "#/channels/notes-maintenance/messages/CleanupOldNotes"}
    ]
    assert cleanup["x-eventbus"]["known_from"] == "annotation"
    assert cleanup["x-eventbus"]["spec"] == "0 3 * * *"


@pytest.mark.parametrize(("app", "service"), [("handlers", "handlers"), (SHOP, "shop")])
def test_asyncapi_references_all_resolve(
    capsys: pytest.CaptureFixture[str], app: str, service: str
) -> None:
    doc = asyncapi(capsys, app, "--service", service)
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)  # KeyError names a dangling reference
    for key, operation in doc["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/") and resolve(doc, channel_ref), key
        # an operation's messages are messages of its own channel (AsyncAPI 3 requires it)
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), (key, message)
    for name, channel in doc["channels"].items():
        for message in channel["messages"].values():
            target = resolve(doc, message["$ref"])
            assert target["x-eventbus"]["stream"] == name


@pytest.mark.parametrize(("app", "service"), [("handlers", "notes-api"), (SHOP, "shop")])
def test_asyncapi_receive_operations_are_the_groups_the_worker_creates(
    capsys: pytest.CaptureFixture[str], eventbus_redis_url: str, app: str, service: str
) -> None:
    doc = asyncapi(capsys, app, "--service", service)
    documented = {
        (op["channel"]["$ref"].removeprefix("#/channels/"), op["x-eventbus"]["group"])
        for op in doc["operations"].values()
        if op["action"] == "receive"
    }

    async def worker_groups() -> set[tuple[str, str]]:
        bus = EventBus.from_url(eventbus_redis_url, service=service)
        try:
            return {(c.stream, c.group) for c in Worker(bus, load_app(app)).consumers}
        finally:
            await bus.aclose()

    assert documented == asyncio.run(worker_groups())


def test_asyncapi_payload_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    schemas = asyncapi(capsys, "handlers")["components"]["schemas"]
    note = schemas["NoteCreated"]
    assert note["type"] == "object"
    assert note["properties"] == {
        "note_id": {"type": "string"},
        "author": {"type": "string"},
        "title": {"type": "string"},
        "body": {"type": "string", "default": ""},
        "created_at": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
    }
    assert note["required"] == ["note_id", "author", "title"]
    assert schemas["CleanupOldNotes"]["properties"] == {"older_than_days": {"type": "integer"}}
    assert schemas["CleanupOldNotes"]["description"].startswith("Delete notes older than")

    shop = asyncapi(capsys, SHOP)
    schemas = shop["components"]["schemas"]
    order = schemas["OrderPlaced"]["properties"]
    assert order["lines"] == {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}
    assert order["currency"] == {"$ref": "#/components/schemas/Currency"}
    assert schemas["Currency"]["enum"] == ["EUR", "USD"]
    assert schemas["Line"]["properties"]["quantity"] == {"type": "integer"}
    assert schemas["PaymentCaptured"]["properties"]["captured_at"]["type"] == "string"
    # a type= override is the message name; its key is <stream>.<type>
    placed = shop["components"]["messages"]["shop-orders.shop.order.placed.v1"]
    assert placed["name"] == "shop.order.placed.v1" and placed["title"] == "OrderPlaced"
    assert placed["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    assert placed["description"] == "A customer placed an order."
    assert placed["x-eventbus"]["class"] == "tests.apps.shop_app.OrderPlaced"


def test_asyncapi_messages_describe_the_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    doc = asyncapi(capsys, "handlers")
    message = doc["components"]["messages"]["notes.NoteDeleted"]
    assert message["contentType"] == "application/json"
    assert message["headers"]["allOf"] == [
        {"$ref": "#/components/schemas/eventbus.Envelope"},
        {"properties": {"type": {"const": "NoteDeleted"}}},
    ]
    envelope = resolve(doc, message["headers"]["allOf"][0]["$ref"])
    assert envelope["type"] == "object" and envelope["required"] == ["type"]
    assert set(envelope["properties"]) >= {
        "id", "type", "source", "time", "key", "ct", "traceparent", "tracestate",
    }  # fmt: skip
    assert envelope["properties"]["time"]["format"] == "date-time"
    assert envelope["properties"]["ct"]["default"] == "application/json"
    assert list(envelope["patternProperties"]) == ["^h:.+$"]
    correlation = resolve(doc, message["correlationId"]["$ref"])
    assert correlation["location"] == "$message.header#/id"


def test_asyncapi_channels_and_operations_of_a_richer_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = asyncapi(capsys, SHOP, "--service", "shop")
    channels = doc["channels"]
    assert list(channels) == ["shop-heartbeats", "shop-orders", "shop-payments", "shop-reports"]
    # declared for the stream but handled by nobody: still a message of the channel
    assert list(channels["shop-orders"]["messages"]) == [
        "OrderAudited", "OrderCancelled", "shop.order.placed.v1",
    ]  # fmt: skip
    ops = doc["operations"]
    # a handler of two streams has one receive operation per stream; a group= override
    # is the group's name; the unannotated schedule 'restock' has no send operation
    assert list(ops) == [
        "finance.ledger", "shop.fulfilment.shop-orders", "shop.fulfilment.shop-payments",
        "shop.reports", "schedule.daily-report", "schedule.shop-heartbeat",
    ]  # fmt: skip
    fulfilment = ops["shop.fulfilment.shop-orders"]
    assert fulfilment["description"] == "Ships paid orders."
    assert fulfilment["x-eventbus"] == {
        "group": "shop.fulfilment", "handler": "fulfilment", "concurrency": 4,
        "max_attempts": 8, "lease_s": 60.0, "timeout_s": 20.0, "idempotent": True,
        "start_from": "new",
    }  # fmt: skip
    assert [m["$ref"] for m in fulfilment["messages"]] == [
        "#/channels/shop-orders/messages/OrderCancelled",
        "#/channels/shop-orders/messages/shop.order.placed.v1",
    ]
    assert ops["finance.ledger"]["x-eventbus"]["group"] == "finance.ledger"
    heartbeat = ops["schedule.shop-heartbeat"]
    assert heartbeat["channel"] == {"$ref": "#/channels/shop-heartbeats"}
    assert heartbeat["x-eventbus"]["known_from"] == "schedule_event"
    # the fixed event of schedule_event is the message's example
    examples = doc["components"]["messages"]["shop-heartbeats.Heartbeat"]["examples"]
    assert examples == [
        {
            "name": "schedule-shop-heartbeat",
            "summary": "published by the schedule 'shop-heartbeat'",
            "payload": {"service": "shop"},
        }
    ]
    report = ops["schedule.daily-report"]
    assert report["x-eventbus"] == {
        "schedule": "daily-report", "spec": "0 6 * * MON-FRI", "tz": "Europe/Berlin",
        "misfire": "all", "known_from": "annotation",
    }  # fmt: skip
    assert report["messages"] == [{"$ref": "#/channels/shop-reports/messages/ReportRequested"}]


def test_asyncapi_prefix_version_and_service(capsys: pytest.CaptureFixture[str]) -> None:
    doc = asyncapi(
        capsys, "handlers", "--prefix", "acme", "--app-version", "2.1.0", "--service", "notes"
    )
    assert doc["info"] == {
        "title": "notes",
        "version": "2.1.0",
        "description": doc["info"]["description"],
    }
    assert doc["channels"]["notes"]["address"] == "acme:{notes}"
    assert doc["channels"]["notes"]["x-eventbus"]["dlq"] == "acme:{notes}:dlq"
    assert doc["x-eventbus"] == {"prefix": "acme", "service": "notes"}
    assert "notes.search-index" in doc["operations"]


def test_asyncapi_bad_prefix_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "asyncapi", "handlers", "--prefix", "a b")
    assert code == 2 and out == ""
    assert err == (
        "eventbus: error: invalid prefix name 'a b': use letters, digits, '_', '.' or '-' "
        "(braces, colons and spaces are reserved for key structure)\n"
    )


def test_asyncapi_output_is_the_same_in_every_process() -> None:
    # set iteration order changes with the hash seed; the document must not
    runs = [eventbus("asyncapi", SHOP, PYTHONHASHSEED=str(seed)) for seed in (1, 2, 3)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert runs[0].stdout.endswith("}\n")


def test_asyncapi_yaml_is_the_same_document(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    as_json = asyncapi(capsys, SHOP)
    code, out, err = cli(capsys, "asyncapi", SHOP, "--format", "yaml")
    assert code == 0, err
    assert yaml.safe_load(out) == as_json
    assert out.startswith("asyncapi: 3.0.0\ninfo:\n")
    # --output: nothing on stdout; .yaml picks the format
    target = tmp_path / "asyncapi.yaml"
    code, out, err = cli(capsys, "asyncapi", SHOP, "--output", str(target))
    assert (code, out, err) == (0, "", "")
    assert yaml.safe_load(target.read_text()) == as_json
    target = tmp_path / "asyncapi.json"
    assert cli(capsys, "asyncapi", SHOP, "-o", str(target))[0] == 0
    assert json.loads(target.read_text()) == as_json


def test_asyncapi_yaml_without_pyyaml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # what an environment without it sees
    code, out, err = cli(capsys, "asyncapi", "handlers", "--format", "yaml")
    assert code == 2 and out == ""
    assert err == (
        "eventbus: error: --format yaml needs PyYAML, which is not installed: use "
        "--format json, or pip install pyyaml\n"
    )


def test_asyncapi_unwritable_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "asyncapi.json"
    code, _, err = cli(capsys, "asyncapi", "handlers", "--output", str(target))
    assert code == 2
    assert err.startswith(f"eventbus: error: cannot write {target}: ")
    assert err.count("\n") == 1


# -- check ------------------------------------------------------------------------------


def rows_of(text: str, first_column: str) -> dict[str, list[str]]:
    """The rows of the table whose header starts with `first_column`, by their first cell
    (cells are separated by two or more spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        rows[cells[0]] = cells[1:]
    return rows


def test_check_sample_app(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "check", "handlers")
    assert (code, err) == (0, "")
    assert out.startswith("app handlers, service handlers: 5 handlers, 1 schedule\n")
    handlers = rows_of(out, "GROUP")
    # streams, event types, concurrency, max attempts, lease, timeout, idempotent, kind
    assert handlers == {
        "handlers.audit-log": ["notes", "NoteCreated, NoteDeleted", "8", "5", "30s", "-",
                               "yes", "async"],
        "handlers.note-cleanup": ["notes-maintenance", "CleanupOldNotes", "1", "5", "30s",
                                  "-", "yes", "async"],
        "handlers.note-store": ["notes", "NoteCreated, NoteDeleted", "32", "5", "30s", "-",
                                "no", "async"],
        "handlers.notifier": ["notes", "NoteCreated", "8", "3", "30s", "-", "no", "sync"],
        "handlers.search-index": ["notes", "NoteCreated", "32", "5", "30s", "-", "no",
                                  "async"],
    }  # fmt: skip
    schedules = rows_of(out, "SCHEDULE")
    [(name, (spec, tz, misfire, emits, ticks))] = schedules.items()
    assert (name, spec, tz, misfire) == ("cleanup-old-notes", "0 3 * * *", "UTC", "once")
    assert emits == "CleanupOldNotes (notes-maintenance)"
    shown = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for t in
             ticks.split(", ")]  # fmt: skip
    now = datetime.now(UTC)
    assert len(shown) == 3 and now < shown[0] <= now + timedelta(days=1)
    assert [t.hour for t in shown] == [3, 3, 3]
    assert shown[2] - shown[1] == shown[1] - shown[0] == timedelta(days=1)
    assert out.endswith("\nno warnings\n")
    assert cli(capsys, "check", "handlers", "--strict")[0] == 0


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", "handlers", "--json", "--service", "notes-api")
    assert code == 0
    report = json.loads(out)
    assert list(report) == ["app", "service", "handlers", "schedules", "warnings"]
    assert (report["app"], report["service"], report["warnings"]) == ("handlers", "notes-api", [])
    assert [h["group"] for h in report["handlers"]] == [
        "notes-api.audit-log", "notes-api.note-cleanup", "notes-api.note-store",
        "notes-api.notifier", "notes-api.search-index",
    ]  # fmt: skip
    assert report["handlers"][0] == {
        "name": "audit-log",
        "group": "notes-api.audit-log",
        "streams": ["notes"],
        "event_types": {"notes": ["NoteCreated", "NoteDeleted"]},
        "concurrency": 8,
        "max_attempts": 5,
        "lease_s": 30.0,
        "timeout_s": None,
        "idempotent": True,
        "sync": False,
        "start_from": "new",
    }
    [schedule] = report["schedules"]
    ticks = schedule.pop("next_ticks")
    assert schedule == {
        "name": "cleanup-old-notes",
        "spec": "0 3 * * *",
        "tz": "UTC",
        "misfire": "once",
        "misfire_grace_s": 300.0,
        "jitter_s": 0.0,
        "emits": [{"stream": "notes-maintenance", "type": "CleanupOldNotes"}],
    }
    assert len(ticks) == 3 and all(t.endswith("T03:00:00Z") for t in ticks)
    assert ticks == sorted(set(ticks))


def test_check_warnings_and_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", SHOP, "--json")
    assert code == 0  # warnings alone do not fail without --strict
    warnings = json.loads(out)["warnings"]
    assert [(w["code"], w["subject"]) for w in warnings] == [
        ("unhandled-type", "stream 'shop-orders'"),
        ("misfire-all-is-once", "schedule 'daily-report'"),
        ("jitter-not-below-interval", "schedule 'restock'"),
    ]
    assert "'OrderAudited' (tests.apps.shop_app.OrderAudited)" in warnings[0]["message"]
    assert "misfire_grace of 5m, shorter than the 1d between its ticks" in warnings[1]["message"]
    assert "jitter of 15s is not shorter than the 10s between its ticks" in warnings[2]["message"]

    code, out, _ = cli(capsys, "check", SHOP, "--strict")
    assert code == 1
    tail = out[out.index("3 warnings:") :].splitlines()
    assert len(tail) == 4
    assert tail[1].startswith("  stream 'shop-orders': event type 'OrderAudited'")
    assert tail[3].endswith("[jitter-not-below-interval]")
    schedules = rows_of(out, "SCHEDULE")
    assert schedules["restock"][3] == "? (not annotated)"
    assert schedules["shop-heartbeat"][3] == "Heartbeat (shop-heartbeats)"


def test_check_ticks_are_shown_in_the_schedules_zone(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", SHOP, "--json")
    assert code == 0
    [report] = [s for s in json.loads(out)["schedules"] if s["name"] == "daily-report"]
    berlin = [datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Berlin"))
              for t in report["next_ticks"]]  # fmt: skip
    assert all(t.hour == 6 and t.minute == 0 and t.weekday() < 5 for t in berlin)
    code, out, _ = cli(capsys, "check", SHOP)
    assert code == 0
    shown = rows_of(out, "SCHEDULE")["daily-report"][4]
    assert shown == ", ".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in berlin)


def test_check_app_across_a_dst_change() -> None:
    # Friday before the spring-forward Sunday of 2026 in Berlin (29 March)
    report = check_app(load_app(SHOP), "shop", now=datetime(2026, 3, 27, 12, tzinfo=UTC))
    [daily] = [s for s in report["schedules"] if s["name"] == "daily-report"]
    assert daily["next_ticks"] == [
        "2026-03-30T04:00:00Z",  # 06:00 CEST, Monday
        "2026-03-31T04:00:00Z",
        "2026-04-01T04:00:00Z",
    ]


# -- apps that do not load --------------------------------------------------------------

LOAD_ERRORS = [
    (
        "no_such_module",
        "app 'no_such_module': no module named 'no_such_module' (run from the directory "
        "that contains it, or install its package)",
    ),
    (
        "tests.apps.broken_app",
        "app 'tests.apps.broken_app': handler 'tests.apps.broken_app.untyped': parameter "
        "'event' has no type annotation; annotate it with the event class (e.g. `event: "
        "NoteCreated`) or pass the types to subscribe(...)",
    ),
    (
        "tests.apps.raising_app",
        "app 'tests.apps.raising_app': importing it raised RuntimeError: NOTES_DB_URL is not "
        "set (tests/apps/raising_app.py:18)",
    ),
]


@pytest.mark.parametrize("command", ["check", "asyncapi"])
@pytest.mark.parametrize(("app", "message"), LOAD_ERRORS)
def test_apps_that_do_not_load_give_one_line(command: str, app: str, message: str) -> None:
    result = eventbus(command, app)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"eventbus: error: {message}\n"


def test_run_reports_an_import_failure_the_same_way() -> None:
    result = eventbus("run", "tests.apps.raising_app", "--redis-url", "redis://127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr == f"eventbus: error: {LOAD_ERRORS[2][1]}\n"


def test_syntax_error_and_missing_dependency(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "appdoc_syntax_app.py").write_text("from eventbus import Router\nrouter = (\n")
    (tmp_path / "appdoc_dep_app.py").write_text(
        "from eventbus import Router\n\nimport no_such_dependency_xyz\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = cli(capsys, "check", "appdoc_syntax_app")
    assert (code, out) == (2, "")
    assert err == (
        "eventbus: error: app 'appdoc_syntax_app': importing it raised SyntaxError: '(' was "
        f"never closed ({tmp_path / 'appdoc_syntax_app.py'}:2)\n"
    )
    code, out, err = cli(capsys, "asyncapi", "appdoc_dep_app")
    assert (code, out) == (2, "")
    assert err == (
        "eventbus: error: app 'appdoc_dep_app': importing it raised ModuleNotFoundError: No "
        f"module named 'no_such_dependency_xyz' ({tmp_path / 'appdoc_dep_app.py'}:3)\n"
    )


def test_help_shows_only_what_the_commands_use() -> None:
    for command, options in [
        ("asyncapi", ["--service", "--prefix", "--app-version", "--format", "--output"]),
        ("check", ["--service", "--json", "--strict"]),
    ]:
        result = eventbus(command, "--help")
        assert result.returncode == 0
        assert all(option in result.stdout for option in options), result.stdout
        assert "--redis-url" not in result.stdout and "--log-level" not in result.stdout
